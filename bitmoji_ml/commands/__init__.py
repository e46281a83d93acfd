"""The `bitmoji` commands, one module per area; `cli.py` assembles them into the Typer app.

A command parses its options, calls a job and renders the job's result. Heavy libraries
(torch, mlflow, onnxruntime) are imported inside the commands that need them, so `bitmoji
--help`, `prepare` and `predict` start fast."""
