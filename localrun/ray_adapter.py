"""The Ray Serve DLC's SageMaker adapter, as it behaves: :8080 in front of Ray Serve's HTTP proxy.

POST /invocations goes to Ray route "/" with the body, Content-Type and Accept (application/json when
absent) and every X-Amzn-SageMaker-* header; its status, body, Content-Type and X-Amzn-SageMaker-*
headers come back. GET /ping asks Ray's /-/healthz. A backend that does not answer within
RAYSERVE_BACKEND_TIMEOUT (300 s) gives 504, one that cannot be reached 503. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SAGEMAKER_HEADER_PREFIX = "x-amzn-sagemaker-"


def sagemaker_headers(headers) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name.lower().startswith(SAGEMAKER_HEADER_PREFIX)}


class Adapter(BaseHTTPRequestHandler):
    backend: str = "http://127.0.0.1:8000"
    timeout: float = 300.0
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass

    def _answer(self, status: int, body: bytes, content_type: str | None, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != "/ping":
            self._answer(404, b'{"detail":"Not Found"}', "application/json")
            return
        try:
            with urllib.request.urlopen(f"{self.backend}/-/healthz", timeout=5) as response:
                healthy = response.status == 200
        except (urllib.error.URLError, OSError):
            healthy = False
        self._answer(200 if healthy else 503, b"", "text/plain; charset=utf-8")

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/invocations":
            self._answer(404, b'{"detail":"Not Found"}', "application/json")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        accept = self.headers.get("Accept", "application/json")
        headers = dict(sagemaker_headers(self.headers), **{
            "Content-Type": self.headers.get("Content-Type", "application/json"), "Accept": accept})
        request = urllib.request.Request(f"{self.backend}/", data=body, headers=headers, method="POST")
        try:
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    status, content, reply = response.status, response.read(), response.headers
            except urllib.error.HTTPError as error:
                status, content, reply = error.code, error.read(), error.headers
        except TimeoutError:
            self._answer(504, json.dumps({"error": "Request timeout"}).encode(), "application/json")
            return
        except (urllib.error.URLError, ConnectionError):
            self._answer(503, json.dumps({"error": "Service unavailable"}).encode(), "application/json")
            return
        self._answer(status, content, reply.get("Content-Type", accept), sagemaker_headers(reply))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localrun.ray_adapter", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--backend", default=os.environ.get("RAYSERVE_BACKEND_URL", "http://127.0.0.1:8000"))
    args = parser.parse_args(argv)
    Adapter.backend = args.backend.rstrip("/")
    Adapter.timeout = float(os.environ.get("RAYSERVE_BACKEND_TIMEOUT", "300"))
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Adapter)
    server.daemon_threads = True
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
