"""The ASGI app `bitmoji serve` runs under uvicorn: MLflow's own scoring server (`scoring_server.init`,
the app `mlflow models serve` runs) for the model at $BITMOJI_SERVE_MODEL_URI, with two changes:

- a request body over the limit is answered 413 before it is parsed: at once when its
  Content-Length says so, else as soon as the streamed body passes the limit (MLflow itself reads
  and parses any body whole, and only then would the model see its size);
- the image column is handed to the model as the base64 text it was sent as, so each value is
  size-checked before it is decoded and decoded strictly (MLflow's lenient decoding turns "%%%"
  into an empty image instead of saying it is not base64).

Plain `mlflow models serve` still serves the same model, without the body limit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from bitmoji_ml.serving.image_batch import IMAGE_COLUMN
from bitmoji_ml.serving.image_model import MAX_BYTES, model_settings

MODEL_URI_ENV = "BITMOJI_SERVE_MODEL_URI"
APP_FACTORY = f"{__name__}:create_app"
# Room for the JSON around the base64 text (names, brackets, quotes, commas of every row).
JSON_SLACK_BYTES = 2**20

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def body_limit(max_request_bytes: int) -> int:
    """The largest request body for `max_request_bytes` of images (0: no limit): their base64
    text (4/3 of the bytes) plus JSON_SLACK_BYTES."""
    return 0 if not max_request_bytes else -(-4 * max_request_bytes // 3) + JSON_SLACK_BYTES


class BodyLimit:
    """ASGI middleware: the body of an HTTP request is read here, up to `limit` bytes, and
    replayed to `app`; a larger one gets a 413 and never reaches `app`. Memory stays bounded by
    the limit whatever a client sends."""

    def __init__(self, app: Callable, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limit:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send, f"{int(declared):,} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away: nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(send, f"more than {self.limit:,} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _refuse(self, send: Send, size: str) -> None:
        message = (
            f"request refused: a body of {size} is over the {self.limit:,}-byte limit; send smaller batches"
        )
        body = json.dumps({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives `body` once, then whatever the connection says next."""
    given = False

    async def replayed() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def serve_images_as_text(model: Any) -> None:
    """Make the scoring server pass the image column through as text (the model decodes the
    base64 itself). Only a model whose input is exactly the image column is changed."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = model.metadata.signature
    if signature is None or signature.inputs is None or signature.inputs.input_names() != [IMAGE_COLUMN]:
        return
    inputs = Schema([ColSpec("string", IMAGE_COLUMN)])
    model.metadata.signature = ModelSignature(
        inputs=inputs, outputs=signature.outputs, params=signature.params
    )


def create_app() -> Callable:
    """uvicorn's factory (`APP_FACTORY`): load the model, then wrap MLflow's scoring app."""
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server

    limit = body_limit(int(model_settings()[MAX_BYTES]))
    model = mlflow.pyfunc.load_model(os.environ[MODEL_URI_ENV])
    serve_images_as_text(model)
    return BodyLimit(scoring_server.init(model), limit)
