"""What ships: model.tar.gz installs nothing at container start, and its code/ alone gives the fixture's
detections on the interpreter that runs this test (the production tier runs it on the DLC 2.6 versions)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tarfile

import pytest
from helpers import REPO
from helpers.clips import encode, require_ffmpeg
from helpers.matching import unmatched

from deploy.archive import build_archive
from deploy.model_dir import CODE_FILES, CODE_LIB_NAME, CODE_PACKAGES
from deploy.vendor import pinned

pytestmark = pytest.mark.production

# What both AWS images ship that code/'s packages may import (requirements/dlc-2.6.txt and ray-dlc.txt pin them),
# and what each entry point adds: the TorchServe toolkit's package, or Ray Serve with its web framework and config models.
BOTH_IMAGES = {"torch", "torchvision", "numpy", "PIL", "cv2", "boto3", "botocore", "urllib3"}
ENTRY_POINTS = {"inference.py": {"sagemaker_inference"}, "ray_app.py": {"ray", "starlette", "pydantic"}}

RUN_THE_HANDLER = """
import json, sys
model_dir, image, clip = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, model_dir + "/code")
import inference
service = inference.model_fn(model_dir)
body, content_type = inference.transform_fn(service, open(image, "rb").read(), "image/png", "application/json")
answer, _ = inference.transform_fn(service, open(clip, "rb").read(), "video/mp2t", "application/json")
import av, cv2, numpy, PIL, torch, torchvision
print(json.dumps({"versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                               "torchvision": torchvision.__version__, "numpy": numpy.__version__,
                               "pillow": PIL.__version__, "opencv": cv2.__version__, "av": av.__version__},
                  "av": av.__file__, "content_type": content_type, "result": json.loads(body),
                  "clip": json.loads(answer)}))
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, reference):
    """The archive built from the fixture checkpoint, unpacked as SageMaker unpacks it."""
    archive = build_archive(0, reference / "efficientdet-d0.pth", tmp_path_factory.mktemp("archive"))
    target = tmp_path_factory.mktemp("opt-ml-model")
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target


def imported_modules(*paths) -> set[str]:
    """Top-level names of every absolute import in these files and folders."""
    names = set()
    for path in [p for root in paths for p in ([root] if root.is_file() else root.rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_the_archive_installs_nothing_at_container_start(model_dir):
    """The toolkits pip-install code/requirements.txt at every start: in network isolation that fails."""
    assert not list(model_dir.rglob("requirements*.txt"))
    code = model_dir / "code"
    carried = {path.name for path in (code / CODE_LIB_NAME).iterdir() if (path / "__init__.py").is_file()}
    assert carried == {requirement.partition("==")[0] for requirement in pinned()}  # what code/lib carries: av
    known = set(sys.stdlib_module_names) | BOTH_IMAGES | set(CODE_PACKAGES) | carried
    assert imported_modules(*(code / package for package in CODE_PACKAGES)) - known == set()
    assert set(ENTRY_POINTS) == set(CODE_FILES)
    for entry_point, its_image in ENTRY_POINTS.items():
        assert imported_modules(code / entry_point) - known - its_image == set(), entry_point


def test_the_dockerfiles_copy_what_the_archive_holds():
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.gpu"):
        text = (REPO / "docker" / dockerfile).read_text()
        copied = re.findall(r"^COPY (\S+) /opt/ml/code/", text, flags=re.MULTILINE)
        assert copied == [*CODE_FILES, *CODE_PACKAGES, "build/code-lib"], dockerfile
        assert "pip install" not in text and "requirements" not in text


def test_the_archives_code_alone_gives_the_fixture_detections(model_dir, reference, tmp_path):
    """Isolated mode (-I): nothing of this repository is importable but what the archive holds; a clip decodes with
    the PyAV that code/lib carries."""
    require_ffmpeg()
    clip = encode(tmp_path / "clip.ts", width=320, height=180, rate="25", seconds=2)
    run = subprocess.run([sys.executable, "-I", "-c", RUN_THE_HANDLER, str(model_dir),
                          str(reference / "coffee.png"), str(clip)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    answer = json.loads(run.stdout.splitlines()[-1])
    print("archive code ran on", answer["versions"])
    expected = json.loads((reference / "d0-coffee.json").read_text())
    result = answer["result"]
    assert answer["content_type"] == "application/json"
    assert (result["width"], result["height"]) == (expected["width"], expected["height"])
    assert expected["detections"] and unmatched(expected["detections"], result["detections"], 600, 400) == []
    assert answer["av"].startswith(str(model_dir / "code" / CODE_LIB_NAME))
    assert [f["frame"] for f in answer["clip"]["frames"]] == [0, 25] and answer["clip"]["codec"] == "h264"


def test_torchserves_worker_starts_on_these_versions():
    """The image's TorchServe runs inference.py in its Python worker, whose imports (PyYAML among them) must resolve
    on the versions this tier pins."""
    run = subprocess.run([sys.executable, "-I", "-c", "import ts.model_service_worker"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
