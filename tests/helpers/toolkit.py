"""Calling the handler exactly as TorchServe calls the AWS toolkit: HandlerService.handle(data, context)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sagemaker_pytorch_serving_container.handler_service import HandlerService
from ts.context import Context, RequestProcessor


@dataclass
class Response:
    status: int
    content_type: str | None
    body: str

    def json(self):
        return json.loads(self.body)

    @property
    def message(self) -> str:
        """An error body's one line (the whole body, but for its newline)."""
        return self.body.splitlines()[0] if self.body else ""


class Toolkit:
    """A started handler service of the sagemaker-pytorch-inference toolkit over one model dir.

    Like TorchServe, it keeps one Context for the model and sets each request's headers on it.
    """

    def __init__(self, model_dir: Path, gpu_id: int | None = None) -> None:
        self.model_dir = model_dir
        self.context = Context("model", str(model_dir), {}, 1, gpu_id, "1.0")  # TorchServe: the worker's GPU or None
        self.context.request_processor = [RequestProcessor({})]
        self.service = HandlerService()
        self.service.initialize(self.context)

    @property
    def model(self):
        """What model_fn returned (the toolkit's transformer holds it)."""
        return self.service._service._model

    def invoke(self, body: str | bytes, content_type: str | None = "application/json", accept: str | None = None,
               headers: dict[str, str] | None = None) -> Response:
        headers = dict(headers or {})
        if content_type is not None:
            headers["Content-Type"] = content_type
        if accept is not None:
            headers["Accept"] = accept
        context = self.context
        context.request_processor = [RequestProcessor(headers)]
        payload = body.encode() if isinstance(body, str) else body
        output = self.service.handle([{"body": payload}], context)[0]
        processor = context.request_processor[0]
        text = output.decode() if isinstance(output, bytes) else output
        return Response(processor.get_response_status_code(), context.get_response_content_type(0), text)
