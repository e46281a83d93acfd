"""The MLflow runs `bitmoji evaluate` logs.

They go to an experiment of their own, `<experiment>-evaluations` (names.evaluation_experiment),
so the training experiment's runs table and charts show training runs only; each carries the
tag `evaluation=true` as well. An evaluation run has the scored set as its dataset input and,
when the model is a logged model, that model as a model input, with every metric linked to
the model and the dataset: the model's page in the UI lists its evaluations.

`training_lists` reads back what a model's source run trained on, so that `evaluate` can say
when the scored images include training images (training_overlap.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from mlflow.entities import LoggedModelInput, Metric, Param
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from bitmoji_ml.tracking.datasets import LabelledFiles
from bitmoji_ml.tracking.names import EVALUATION_TAG, evaluation_experiment
from bitmoji_ml.tracking.records import EvaluationRun, TrainingList
from bitmoji_ml.tracking.runs import end_status, now_ms
from bitmoji_ml.tracking.store import Store


def _source_path(source: str) -> Path | None:
    """The local file of a dataset source: MLflow stores `{"uri": "/path"}` for a local one."""
    try:
        uri = json.loads(source).get("uri", "")
    except (ValueError, AttributeError):
        return None
    return Path(uri) if uri and not uri.startswith(("s3:", "gs:", "http:", "https:", "dbfs:")) else None


def training_lists(store: Store, run_id: str) -> list[TrainingList] | None:
    """The datasets run `run_id` used for training (the train list; train and val for
    `--all-labelled`), each once; None when the store has no such run."""
    if not run_id or not store.run_exists(run_id):
        return None
    found: dict[str, TrainingList] = {}
    for used in store.client.get_run(run_id).inputs.dataset_inputs:
        if {tag.key: tag.value for tag in used.tags}.get(MLFLOW_DATASET_CONTEXT) == "training":
            dataset = used.dataset  # a resumed run links its datasets again: keep one of each
            found.setdefault(
                dataset.digest, TrainingList(dataset.name, dataset.digest, _source_path(dataset.source))
            )
    return list(found.values())


def log_evaluation(
    store: Store,
    *,
    experiment: str,
    run_name: str,
    metrics: dict[str, float],
    folder: Path,
    tags: dict[str, str],
    model_id: str | None,
    dataset: LabelledFiles,
    params: dict[str, str] | None = None,
) -> EvaluationRun:
    """One finished evaluation run in the evaluations experiment of `experiment`: `params`
    (what was scored), tags, the scored dataset (and logged model) as inputs, metrics linked
    to both (so they show on the logged model's page), and every file of `folder` as artifacts."""
    name = evaluation_experiment(experiment)
    client = store.client
    run = client.create_run(
        store.experiment_id(name), run_name=run_name, tags={**resolve_tags(), **tags, EVALUATION_TAG: "true"}
    )
    run_id, failure = run.info.run_id, None
    try:
        if params:
            client.log_batch(run_id, params=[Param(key, str(value)) for key, value in params.items()])
        models = [LoggedModelInput(model_id)] if model_id else None
        client.log_inputs(run_id, datasets=[dataset.as_input("evaluation")], models=models)
        timestamp = now_ms()
        linked = {"model_id": model_id, "dataset_name": dataset.name, "dataset_digest": dataset.digest}
        client.log_batch(
            run_id,
            metrics=[Metric(key, float(value), timestamp, 0, **linked) for key, value in metrics.items()],
        )
        client.log_artifacts(run_id, str(folder))
    except BaseException as error:
        failure = type(error)
        raise
    finally:
        client.set_terminated(run_id, status=end_status(failure))
    return EvaluationRun(run_id, name)
