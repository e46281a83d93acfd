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
    """Start the MLflow UI on the project's store (127.0.0.1 only) until Ctrl-C, SIGTERM or SIGHUP."""
    from bitmoji_ml.serving import processes as serving
    from bitmoji_ml.tracking.names import evaluation_experiment
    from bitmoji_ml.tracking.store import Store

    store = Store.open()
    command = serving.mlflow_ui_command(uri=store.uri, artifact_root=store.artifact_root, port=port)
    serving.check_port_free(port=port)
    typer.echo(f"MLflow UI for {store.uri} at {serving.local_url(port)}  (Ctrl-C to stop)")
    for kind, name in (("training runs", experiment), ("evaluation runs", evaluation_experiment(experiment))):
        experiment_id = store.find_experiment(name)
        if experiment_id is not None:
            typer.echo(f"{kind} ({name}): {serving.runs_page_url(port=port, experiment_id=experiment_id)}")
        elif name == experiment:
            typer.echo(f"experiment {experiment} has no runs yet (run `bitmoji train`)")
    stopped = serving.run_in_foreground(command)
    if stopped.stopped_by:
        typer.echo(f"stopped the MLflow UI ({stopped.stopped_by})")
    elif stopped.code != 0:
        raise BitmojiError(f"the MLflow UI exited with code {stopped.code} (see its messages above)")


@friendly
def serve(
    model_uri: Annotated[
        str, typer.Option(help="MLflow model URI to serve")
    ] = f"models:/{paths.REGISTERED_MODEL}@champion",
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1")] = 5001,
    workers: Annotated[int, typer.Option(help="Server worker processes")] = 1,
) -> None:
    """Serve the registered image model over REST on 127.0.0.1 until Ctrl-C (prints a curl line)."""
    from bitmoji_ml.serving.model_server import serve_model
    from bitmoji_ml.tracking.store import tracking_uri

    stopped = serve_model(store_uri=tracking_uri(), model_uri=model_uri, port=port, workers=workers)
    if stopped.stopped_by:
        typer.echo(f"stopped the model server ({stopped.stopped_by})")
    elif stopped.code != 0:
        raise BitmojiError(f"the model server exited with code {stopped.code} (see its messages above)")
