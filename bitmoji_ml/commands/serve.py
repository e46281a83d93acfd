"""Local servers: `bitmoji ui` (the MLflow UI) and `bitmoji serve` (the registered model over REST)."""

from __future__ import annotations

from typing import Annotated

import typer

from bitmoji_ml import paths
from bitmoji_ml.commands.options import Experiment, friendly
from bitmoji_ml.errors import BitmojiError


@friendly
def ui(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1")] = 5000,
    experiment: Experiment = paths.EXPERIMENT,
) -> None:
    """Start the MLflow UI on the project's store (127.0.0.1 only) until Ctrl-C, SIGTERM or SIGHUP;
    its links are printed once the page answers."""
    from bitmoji_ml.serving.mlflow_ui import run_ui
    from bitmoji_ml.serving.processes import local_url, runs_page_url
    from bitmoji_ml.tracking.names import evaluation_experiment
    from bitmoji_ml.tracking.store import Store

    store = Store.open()
    experiments = [  # found here, which also marks them as model-training experiments
        (kind, name, store.find_experiment(name))
        for kind, name in (
            ("training runs", experiment),
            ("evaluation runs", evaluation_experiment(experiment)),
        )
    ]
    typer.echo(f"starting the MLflow UI for {store.uri} on {local_url(port)} ...")

    def print_links() -> None:
        typer.echo(f"MLflow UI for {store.uri} at {local_url(port)}  (Ctrl-C to stop)")
        for kind, name, experiment_id in experiments:
            if experiment_id is not None:
                typer.echo(f"{kind} ({name}): {runs_page_url(port=port, experiment_id=experiment_id)}")
            elif name == experiment:
                typer.echo(f"experiment {experiment} has no runs yet (run `bitmoji train`)")

    stopped = run_ui(store_uri=store.uri, artifact_root=store.artifact_root, port=port, on_ready=print_links)
    typer.echo(f"stopped the MLflow UI ({stopped.stopped_by})")


def served_model_uri(model_uri: str | None, experiment: str | None) -> str:
    """--model-uri, else `models:/<experiment>@champion` (the registered model `export-onnx
    --experiment` names after the experiment; default experiment: bitmoji-gender)."""
    from bitmoji_ml.tracking.names import champion_uri

    if model_uri is not None and experiment is not None:
        raise BitmojiError("give --model-uri or --experiment, not both")
    return model_uri if model_uri is not None else champion_uri(experiment or paths.EXPERIMENT)


@friendly
def serve(
    model_uri: Annotated[
        str | None,
        typer.Option(help="MLflow model URI to serve (default: models:/<experiment>@champion)"),
    ] = None,
    experiment: Annotated[
        str | None,
        typer.Option(
            help=f"Serve this experiment's registered model's @champion (default: {paths.EXPERIMENT})"
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1")] = 5001,
    workers: Annotated[int, typer.Option(help="Server worker processes")] = 1,
) -> None:
    """Serve the registered image model over REST on 127.0.0.1 until Ctrl-C (prints a curl line)."""
    from bitmoji_ml.serving.model_server import serve_model
    from bitmoji_ml.tracking.store import tracking_uri

    uri = served_model_uri(model_uri, experiment)
    stopped = serve_model(store_uri=tracking_uri(), model_uri=uri, port=port, workers=workers)
    if stopped.stopped_by:
        typer.echo(f"stopped the model server ({stopped.stopped_by})")
    elif stopped.code != 0:
        raise BitmojiError(f"the model server exited with code {stopped.code} (see its messages above)")
