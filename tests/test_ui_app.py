"""`bitmoji ui`'s app plugin: MLflow's page opens in model-training mode unless the browser chose."""

import asyncio
import importlib.metadata
from pathlib import Path

import mlflow

from bitmoji_ml.serving import ui_app
from bitmoji_ml.serving.processes import UI_APP
from bitmoji_ml.serving.ui_app import DEFAULT_MODE_SCRIPT, WORKFLOW_TYPE_KEY, ModelTrainingDefault

PAGE = b"<!doctype html><html><head><meta charset='utf-8'/></head><body>app</body></html>"


def page_app(body: bytes, content_type: bytes, extra_headers=(), chunks: int = 1):
    """A stand-in for MLflow's app: every GET answers `body` in `chunks` pieces."""

    async def app(scope, receive, send):
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            *extra_headers,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        step = -(-len(body) // chunks)
        for start in range(0, len(body), step):
            await send({"type": "http.response.body", "body": body[start : start + step], "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def get(app, path: str) -> tuple[dict[bytes, bytes], bytes]:
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": []}
    asyncio.run(ModelTrainingDefault(app)(scope, receive, send))
    headers = dict(sent[0]["headers"])
    return headers, b"".join(message.get("body", b"") for message in sent[1:])


def test_the_index_page_gets_the_default_mode_script_first_in_its_head():
    headers, body = get(page_app(PAGE, b"text/html; charset=utf-8", chunks=3), "/")
    assert body.startswith(b"<!doctype html><html><head>" + DEFAULT_MODE_SCRIPT + b"<meta")
    assert body.replace(DEFAULT_MODE_SCRIPT, b"") == PAGE
    assert int(headers[b"content-length"]) == len(body)


def test_the_script_sets_model_training_only_when_the_browser_has_no_choice():
    script = DEFAULT_MODE_SCRIPT.decode()
    assert f'localStorage.getItem("{WORKFLOW_TYPE_KEY}")===null' in script  # a person's choice stays
    assert 'setItem("mlflow.workflowType_v1","\\"machine_learning\\"")' in script  # JSON, as MLflow stores it


def test_other_paths_and_compressed_or_non_html_pages_pass_untouched():
    assert get(page_app(PAGE, b"text/html"), "/static-files/x.html")[1] == PAGE
    assert get(page_app(b'{"a": 1}', b"application/json"), "/")[1] == b'{"a": 1}'
    assert get(page_app(PAGE, b"text/html", [(b"content-encoding", b"gzip")]), "/")[1] == PAGE


def test_the_plugin_is_registered_and_matches_the_installed_ui():
    (entry,) = [
        point for point in importlib.metadata.entry_points(group="mlflow.app") if point.name == UI_APP
    ]
    assert entry.value == "bitmoji_ml.serving.ui_app:create_app"
    assert callable(ui_app.create_app)
    # The installed MLflow UI keeps its sidebar mode under this key (useLocalStorage "<key>_v<n>").
    bundles = (Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js").glob("main.*.js")
    bundle = "".join(path.read_text() for path in bundles)
    assert 'key:"mlflow.workflowType",version:1' in bundle and "`${e}_v${t}`" in bundle
