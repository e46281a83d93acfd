"""The MLflow UI app `bitmoji ui` serves: MLflow's own server app, with the UI opening in its
model-training mode on every page.

MLflow 3's UI keeps its sidebar mode (GenAI, or model training) per browser in localStorage,
GenAI unless the person switched; a `?workflowType=machine_learning` link sets it for that page
only, so one click into a run, Compare or the registry turned the sidebar back to Traces and
"Agent versions". MLflow has no server setting for it. The page is MLflow's single index.html,
so this app adds one line to it that sets model training as the default when the browser has
no choice stored yet: a person who switches to GenAI keeps that choice.

Registered as the MLflow app plugin `bitmoji-ui` (pyproject's `mlflow.app` entry point, a
factory), which `mlflow ui --app-name bitmoji-ui` serves with uvicorn like its default app.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

# MLflow 3.x's key (useLocalStorage: "<key>_v<version>", JSON value) and its two values.
WORKFLOW_TYPE_KEY = "mlflow.workflowType_v1"
MODEL_TRAINING = "machine_learning"
INDEX_PATHS = ("/", "/index.html")
_KEY, _VALUE = json.dumps(WORKFLOW_TYPE_KEY), json.dumps(json.dumps(MODEL_TRAINING))
DEFAULT_MODE_SCRIPT = (
    f"<script>try{{if(localStorage.getItem({_KEY})===null)localStorage.setItem({_KEY},{_VALUE})}}catch(e){{}}</script>"
).encode()

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Message, Receive, Send], Awaitable[None]]


def with_default_mode(html: bytes) -> bytes:
    """The page with the default-mode script first in its <head> (before MLflow's bundles run)."""
    head = html.find(b"<head>")
    if head < 0:
        return html
    cut = head + len(b"<head>")
    return html[:cut] + DEFAULT_MODE_SCRIPT + html[cut:]


class ModelTrainingDefault:
    """ASGI middleware: MLflow's index page gets `DEFAULT_MODE_SCRIPT`; everything else, and a
    compressed page, passes through untouched. Hand-written because it is ten lines of ASGI and
    needs no dependency beyond what MLflow's server already runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET" or scope["path"] not in INDEX_PATHS:
            await self.app(scope, receive, send)
            return
        start: Message = {}
        body: list[bytes] = []

        async def send_changed(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            await _send_page(start, b"".join(body), send)

        await self.app(scope, receive, send_changed)


async def _send_page(start: Message, page: bytes, send: Send) -> None:
    headers = [(name.lower(), value) for name, value in start.get("headers", [])]
    kind = dict(headers).get(b"content-type", b"")
    if kind.startswith(b"text/html") and b"content-encoding" not in dict(headers):
        page = with_default_mode(page)
        headers = [(name, value) for name, value in headers if name != b"content-length"]
        headers.append((b"content-length", str(len(page)).encode()))
    await send({**start, "headers": headers})
    await send({"type": "http.response.body", "body": page})


def create_app() -> ASGIApp:
    """The app factory uvicorn calls in the server process (`mlflow` looks the plugin up, and so
    imports this module, in the command's own process too: MLflow is imported only here)."""
    from mlflow.server.fastapi_app import app

    return ModelTrainingDefault(app)
