"""The wheels model.tar.gz carries itself (requirements/archive.txt), unpacked into code/lib: endpoints in network
isolation have no package index, and the archive installs nothing at container start. `request_handling` puts
code/lib on the import path.

The wheels are the x86_64 manylinux abi3 builds both AWS images run, downloaded once into build/wheels (from the
package index the machine's pip uses) and unpacked once into build/code-lib, which the Dockerfiles copy too.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO / "requirements" / "archive.txt"
WHEELS = REPO / "build" / "wheels"
CODE_LIB = REPO / "build" / "code-lib"
PLATFORM = ("--platform", "manylinux_2_28_x86_64", "--implementation", "cp", "--abi", "abi3",
            "--python-version", "3.12")


def pinned() -> list[str]:
    """The archive's requirements, `name==version` each."""
    return [line.split("#")[0].strip() for line in REQUIREMENTS.read_text().splitlines() if line.split("#")[0].strip()]


def wheel_for(requirement: str) -> Path:
    """The requirement's wheel in build/wheels, downloaded there when missing."""
    name, _, version = requirement.partition("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    found = sorted(WHEELS.glob(pattern))
    if not found:
        WHEELS.mkdir(parents=True, exist_ok=True)
        run = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                              *PLATFORM, "--dest", str(WHEELS), requirement], capture_output=True, text=True)
        found = sorted(WHEELS.glob(pattern))
        if run.returncode != 0 or not found:
            raise SystemExit(f"could not download {requirement} for the archive ({REQUIREMENTS.name}): "
                             f"{run.stderr.strip()[-500:] or 'no wheel'}; put its wheel in {WHEELS}")
    return found[-1]


def code_lib() -> Path:
    """build/code-lib: every wheel of requirements/archive.txt unpacked (made once per set of wheels)."""
    wheels = [wheel_for(requirement) for requirement in pinned()]
    stamp = CODE_LIB / ".wheels"
    wanted = "\n".join(wheel.name for wheel in wheels)
    if stamp.is_file() and stamp.read_text() == wanted:
        return CODE_LIB
    if CODE_LIB.exists():
        subprocess.run(["rm", "-rf", str(CODE_LIB)], check=True)
    CODE_LIB.mkdir(parents=True)
    for wheel in wheels:
        unpack(wheel, CODE_LIB)
    stamp.write_text(wanted)
    return CODE_LIB


def unpack(wheel: str | Path, into: str | Path) -> None:
    """The wheel's files under `into`, importable from there once `into` is on the path."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(into)
        names = archive.namelist()
    for name in names:  # zip files keep no modes: shared libraries must be executable to load
        if ".so" in Path(name).name:
            (Path(into) / name).chmod(0o755)


if __name__ == "__main__":
    if len(sys.argv) == 3:  # python -m deploy.vendor WHEEL DIR: one wheel unpacked (bench/gpu-check.sh)
        unpack(sys.argv[1], sys.argv[2])
    elif len(sys.argv) == 1:  # build/code-lib, which the Dockerfiles copy
        print(code_lib())
    else:
        print("usage: python -m deploy.vendor [WHEEL DIR]: build/code-lib from requirements/archive.txt, or one wheel "
              "unpacked into DIR", file=sys.stderr)
        sys.exit(2)
