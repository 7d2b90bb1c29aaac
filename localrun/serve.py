"""`make serve`: the AWS toolkit + TorchServe on :8080 over a SageMaker-style model dir, in the foreground.

The model dir is assembled as SageMaker unpacks model.tar.gz (checkpoint at its root, code in
code/), or taken from MODEL=path (a model.tar.gz or a model dir, never written to). Ctrl-C stops
every process started here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from deploy.model_dir import prepare_model_dir

from .cli import server_arguments, serving_from_a_terminal
from .ports import free_ports

log = logging.getLogger("localrun.serve")

TS_FRONTEND = "org.pytorch.serve.ModelServer"  # TorchServe's Java main class
TS_CONFIG_FILE = Path("/etc/sagemaker-ts.properties")  # where the toolkit writes TorchServe's configuration
STARTUP_TIMEOUT = 120  # seconds to wait for a READY worker: TorchServe's own model startupTimeout


def toolkit_environment(base_dir: Path, port: int) -> dict[str, str]:
    metrics, grpc_inference, grpc_management, workers = free_ports(4)
    while port in (metrics, grpc_inference, grpc_management, workers):
        metrics, grpc_inference, grpc_management, workers = free_ports(4)
    env = dict(os.environ)
    env.update({
        "SAGEMAKER_BASE_DIR": str(base_dir),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SAGEMAKER_PROGRAM": "inference.py",
        # TorchServe's other listeners default to fixed ports (8082, 7070, 7071, workers from 9000):
        # take free ones so that they collide with nothing else here. (The toolkit itself still runs
        # one TorchServe per machine.)
        "TS_METRICS_ADDRESS": f"http://127.0.0.1:{metrics}",
        "TS_GRPC_INFERENCE_PORT": str(grpc_inference),
        "TS_GRPC_MANAGEMENT_PORT": str(grpc_management),
        "TS_INITIAL_WORKER_PORT": str(workers),
        "PYTHONUNBUFFERED": "1",
        # torchserve and java are looked up on PATH: put this venv's scripts first.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    })
    return env


def running_model_servers() -> list[int]:
    """Pids of TorchServe frontends on this machine (the toolkit refuses to run beside another)."""
    pids = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if process.info["status"] != psutil.STATUS_ZOMBIE and TS_FRONTEND in (process.info["cmdline"] or []):
            pids.append(process.pid)
    return pids


def _get_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.load(response) if response.status == 200 else None
    except (OSError, ValueError):
        return None


def wait_until_ready(port: int, process: subprocess.Popen, started: float,
                     timeout: float = STARTUP_TIMEOUT) -> tuple[float, float]:
    """(seconds to the first 200 on /ping, seconds until a model worker is READY) from process start.

    TorchServe answers /ping before the workers have run model_fn, so readiness is read from the
    management API, which the toolkit binds to the same port.
    """
    base = f"http://127.0.0.1:{port}"
    ping = None
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"the model server exited with status {process.returncode}")
        if ping is None and _get_json(f"{base}/ping") is not None:
            ping = time.monotonic() - started
        if ping is not None:
            models = _get_json(f"{base}/models/model") or [{}]
            if any(w.get("status") == "READY" for w in models[0].get("workers", [])):
                return ping, time.monotonic() - started
        time.sleep(0.25)
    raise TimeoutError(f"no model worker became READY within {timeout} s (see the server log)")


class ModelServer:
    """The toolkit's `serving.main()` in its own process group, over a prepared model dir."""

    def __init__(self, model: str | None = None, coef: int = 0, port: int = 8080, weights: str | None = None,
                 workdir: str | Path | None = None, env: dict[str, str] | None = None,
                 log_path: str | Path | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="efficientdet-serve-") if workdir is None else None
        self.workdir = Path(workdir or self._tmp.name)
        self.base_dir = self.workdir / "ml"
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.model_dir = prepare_model_dir(self.base_dir, model, coef, weights)
        self.env = toolkit_environment(self.base_dir, port)
        if not model:
            self.env.setdefault("EFFICIENTDET_COMPOUND_COEF", str(coef))
        self.env.update(env or {})
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None
        self.ping_seconds: float | None = None
        self.ready_seconds: float | None = None

    def start(self) -> ModelServer:
        others = running_model_servers()
        if others:
            raise SystemExit(f"TorchServe is already running (pid {', '.join(map(str, others))}): the AWS toolkit "
                             "serves one per machine; stop it first (Ctrl-C in its `make serve`)")
        if TS_CONFIG_FILE.exists() and not os.access(TS_CONFIG_FILE, os.W_OK) or \
                not TS_CONFIG_FILE.exists() and not os.access(TS_CONFIG_FILE.parent, os.W_OK):
            raise SystemExit(f"the AWS toolkit writes {TS_CONFIG_FILE}: make it writable for this user "
                             f"(sudo touch {TS_CONFIG_FILE} && sudo chown $USER {TS_CONFIG_FILE})")
        stdout = None
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            stdout = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child process
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from sagemaker_pytorch_serving_container import serving; serving.main()"],
            cwd=self.workdir, env=self.env, start_new_session=True, stdout=stdout, stderr=subprocess.STDOUT)
        if stdout:
            stdout.close()
        try:
            self.ping_seconds, self.ready_seconds = wait_until_ready(self.port, self.process, started)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the toolkit, TorchServe's Java process and its Python workers (one process group)."""
        if self.process is None:
            return
        group = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)  # the toolkit forwards it to TorchServe, which stops its workers
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)  # whatever of the group is still there
        self.process.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and running_model_servers():
            time.sleep(0.1)  # the toolkit picks "the" TorchServe by its command line: let ours be gone
        self.process = None
        if self._tmp:
            shutil.rmtree(self._tmp.name, ignore_errors=True)

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    args = server_arguments("localrun.serve", __doc__.splitlines()[0], argv)
    serving_from_a_terminal()
    server = ModelServer(args.model, args.coef, args.port, args.weights)
    try:
        server.start()
        log.info("ready on http://127.0.0.1:%d (cold start: /ping after %.1f s, model loaded after %.1f s); "
                 "model dir %s; Ctrl-C stops", args.port, server.ping_seconds, server.ready_seconds, server.model_dir)
        log.info("try: curl -s localhost:%d/invocations -H 'Content-Type: application/json' -d %s", args.port,
                 json.dumps(json.dumps({"bucket": "videoblocks-ml", "key": "path/to/frame.jpg"})))
        while server.process.poll() is None:
            time.sleep(0.5)
        log.error("the model server exited with status %s", server.process.returncode)
        return 1
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
