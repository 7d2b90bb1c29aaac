"""The packages' imports run down the layers only: the shipped code needs nothing of the tools around it, and no
tool needs one above it."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from helpers import REPO

pytestmark = pytest.mark.unit

# Lowest first: a package may import itself and the packages before it.
LAYERS = ("samples", "efficientdet", "request_handling", "deploy", "detect", "localrun", "bench")


def imported_packages(package: str) -> set[str]:
    """The top-level names of our packages that any module of `package` imports, at any depth of its code."""
    found = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found & set(LAYERS)


@pytest.mark.parametrize("package", LAYERS)
def test_a_package_imports_only_the_layers_below_it(package):
    allowed = set(LAYERS[:LAYERS.index(package) + 1])
    assert imported_packages(package) <= allowed, f"{package} imports {imported_packages(package) - allowed}"


@pytest.mark.parametrize("module", ["request_handling.results", "request_handling.formats",
                                    "request_handling.responses"])
def test_turning_results_into_a_body_needs_neither_torch_nor_the_service(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'request_handling.service') if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stderr[-500:] or run.stdout


def test_the_deploy_command_line_starts_without_torch():
    """`python -m deploy … --help` answers at once, not after the seconds torch takes to import."""
    code = "import sys, deploy.__main__; print('torch' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "False", run.stderr[-500:] or run.stdout
