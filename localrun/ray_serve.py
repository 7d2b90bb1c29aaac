"""`make serve SERVER=ray`: the model dir served as the AWS Ray Serve DLC serves it, on :8080, in the foreground.

As the image's entry point does: PYTHONPATH=model dir:model dir/code, `ray start --head`, `serve start`,
`serve run <model dir>/config.yaml`, then the SageMaker adapter on :8080 (ours, `localrun.ray_adapter`,
which behaves as the image's). Everything listens on loopback only. Ctrl-C stops every Ray process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from deploy.model_dir import REPO, prepare_model_dir

from .cli import server_arguments, serving_from_a_terminal
from .ports import free_ports

log = logging.getLogger("localrun.ray_serve")

STARTUP_TIMEOUT = 180  # seconds for Ray, Serve and the model replica to come up
# Ray's two command lines, run by this Python: a venv that also holds the SageMaker toolkit has a `serve`
# script of the toolkit's, which starts TorchServe instead.
RAY_CLI = ("-c", "import sys; from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())")
SERVE_CLI = ("-c", "import sys; from ray.serve.scripts import cli; sys.argv[0] = 'serve'; sys.exit(cli())")
RAY_PORT_OPTIONS = ("ray-client-server-port", "node-manager-port", "object-manager-port", "metrics-export-port",
                    "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port")


def _status(url: str, data: bytes | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return 0


class RayServer:
    """Ray Serve over a prepared model dir, with the SageMaker adapter in front; one per machine."""

    def __init__(self, model: str | None = None, coef: int = 0, port: int = 8080, weights: str | None = None,
                 env: dict[str, str] | None = None, log_path: str | Path | None = None,
                 ray_dir: Path | None = None) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="efficientdet-ray-"))
        self.model_dir = prepare_model_dir(self.workdir, model, coef, weights)
        self.port = port
        self.ray_dir = ray_dir or Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths
        bin_dir = Path(sys.executable).parent
        self.env = dict(os.environ, PYTHONPATH=f"{self.model_dir}:{self.model_dir / 'code'}",
                        PATH=os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]),
                        RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1",
                        # a single-machine cluster: every Ray process takes 127.0.0.1 as its address, not the
                        # machine's network address (Ray's local mode, as on macOS)
                        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
        if not model:
            self.env.setdefault("EFFICIENTDET_COMPOUND_COEF", str(coef))
        self.env.update(env or {})
        self.log_path = Path(log_path) if log_path else self.workdir / "serve.log"
        self.processes: list[subprocess.Popen] = []
        self.ready_seconds: float | None = None

    def _run(self, *command: str) -> None:
        with open(self.log_path, "ab") as out:
            subprocess.run(command, cwd=self.workdir, env=self.env, stdout=out, stderr=subprocess.STDOUT, check=True,
                           timeout=STARTUP_TIMEOUT)

    def _spawn(self, *command: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
        with open(self.log_path, "ab") as out:
            process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.processes.append(process)
        return process

    def start(self) -> RayServer:
        started = time.monotonic()
        gcs_port, http_port, *ports = free_ports(9)
        gcs = f"127.0.0.1:{gcs_port}"
        try:
            self._run(sys.executable, *RAY_CLI, "start", "--head", f"--port={gcs_port}", "--node-ip-address=127.0.0.1",
                      "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={self.ray_dir}",
                      *(f"--{option}={port}" for option, port in zip(RAY_PORT_OPTIONS, ports, strict=True)))
            self._run(sys.executable, *SERVE_CLI, "start", f"--address={gcs}", "--http-host=127.0.0.1", f"--http-port={http_port}")
            serve_run = self._spawn(sys.executable, *SERVE_CLI, "run", f"--address={gcs}", str(self.model_dir / "config.yaml"),
                                    cwd=self.workdir, env=self.env)
            adapter_env = dict(self.env, PYTHONPATH=str(REPO))
            self._spawn(sys.executable, "-m", "localrun.ray_adapter", "--port", str(self.port),
                        "--backend", f"http://127.0.0.1:{http_port}", cwd=REPO, env=adapter_env)
            self._wait_until_ready(serve_run, started)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self, serve_run: subprocess.Popen, started: float) -> None:
        """Ready once our app itself answers through the adapter (a bodiless probe gets its 4xx)."""
        url = f"http://127.0.0.1:{self.port}"
        while time.monotonic() - started < STARTUP_TIMEOUT:
            if serve_run.poll() is not None:
                raise RuntimeError(f"`serve run` exited with status {serve_run.returncode}; see {self.log_path}")
            if _status(f"{url}/ping") == 200 and 400 <= _status(f"{url}/invocations", b"") < 500 \
                    and _status(f"{url}/invocations", b"") != 404:
                self.ready_seconds = time.monotonic() - started
                return
            time.sleep(0.5)
        raise TimeoutError(f"Ray Serve did not answer within {STARTUP_TIMEOUT} s; see {self.log_path}")

    def replica_logs(self) -> str:
        """Everything Ray's processes wrote (the replicas' log lines among it)."""
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.ray_dir.glob("session_*/logs/**/*"))
                         if path.is_file() and path.suffix in (".log", ".err", ".out"))

    def stop(self) -> None:
        """The adapter and `serve run`, then every Ray process (`ray stop`), then the temporary folders."""
        for process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(20)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self.processes = []
        with open(self.log_path, "ab") as out:
            subprocess.run([sys.executable, *RAY_CLI, "stop", "--force"], cwd=self.workdir, env=self.env, stdout=out,
                           stderr=subprocess.STDOUT, timeout=120)
        shutil.rmtree(self.ray_dir, ignore_errors=True)

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RayServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = server_arguments("localrun.ray_serve", __doc__.splitlines()[0], argv)
    serving_from_a_terminal()
    logs = args.log_dir
    server = RayServer(args.model, args.coef, args.port, args.weights,
                       log_path=logs / "serve.log" if logs else Path(tempfile.gettempdir()) / "efficientdet-ray-serve.log",
                       ray_dir=logs / "ray" if logs else None)
    try:
        server.start()
        log.info("ready on http://127.0.0.1:%d after %.1f s (Ray Serve; log %s, replica logs under %s); Ctrl-C stops",
                 args.port, server.ready_seconds, server.log_path, server.ray_dir)
        while all(process.poll() is None for process in server.processes):
            time.sleep(0.5)
        log.error("a Ray Serve process exited; see %s", server.log_path)
        return 1
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        server.stop()
        server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
