"""Every MLflow tracking call of the project, one job per module:

- `names`: what MLflow knows the project's things by (no MLflow import)
- `store`: the `Store` a command opens once (URI, client, experiments; no global state)
- `datasets`: the train/val lists and labelled sets as MLflow datasets with content digests
- `runs`: the training run (`TrainingRun`) and run checkpoints
- `evaluations`: the evaluation runs `bitmoji evaluate` logs
- `listing`: the runs of an experiment as `RunRecord`s for `bitmoji runs`
- `ranking`: the best logged checkpoint on the current validation list (export's default)
- `registration`: what `export-onnx` logs, the registered versions and `@champion`
- `resolve`: the ONNX model `bitmoji evaluate` scores (`@champion` or a run's export)

Import the module you need (`from bitmoji_ml.tracking.store import Store`); this package
imports nothing, so `tracking.names` stays free of MLflow.
"""
