"""The MLflow store a command works with: one `Store` per command, opened once, passed down.

It holds the URI and an `MlflowClient` bound to it; nothing here sets MLflow's process-wide
tracking URI, except `Store.process_default()` (public MLflow API only) for the MLflow calls
that read only that.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from bitmoji_ml import paths
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.tracking.names import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
SQLITE_PREFIX = "sqlite:///"
# An unreachable server should fail in seconds, not after minutes of retries; downloads of a
# checkpoint or model draw no progress bars of their own.
ENVIRONMENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the project's SQLite store under mlruns/."""
    return os.environ.get(TRACKING_URI_ENV) or paths.DEFAULT_TRACKING_URI


def artifact_root(uri: str) -> str | None:
    """For a SQLite store, artifacts go in an `artifacts/` folder beside the database."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    return (Path(uri[len(SQLITE_PREFIX) :]).parent / "artifacts").resolve().as_uri()


def local_path(uri: str) -> str:
    """A file:// artifact URI as a plain path; other URIs unchanged."""
    return unquote(urlparse(uri).path) if uri.startswith("file://") else uri


def failure_reason(error: BaseException) -> str:
    """Why a store could not be used, in one whole line: the innermost cause when there is a
    chain (an unreachable server ends in e.g. "Connection refused", under three layers of
    wrapped requests/urllib3 text), else the error's own first line, never cut mid-sentence."""
    innermost = error
    while innermost.__cause__ is not None or innermost.__context__ is not None:
        innermost = innermost.__cause__ or innermost.__context__
    if isinstance(innermost, OSError) and innermost.strerror:
        return innermost.strerror  # "[Errno 111] Connection refused" -> "Connection refused"
    text = str(innermost).strip() or str(error).strip()
    return text.splitlines()[0].rstrip(".") if text else type(error).__name__


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a SQLite store URI; None for another store or an in-memory one."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    path = Path(unquote(uri[len(SQLITE_PREFIX) :].split("?")[0]))
    return None if str(path) in ("", ":memory:") else path


def _open_sqlite_file(path: Path) -> None:
    """Open (or create) the database file once: MLflow retries a file it cannot open for about
    two minutes before it says so."""
    path.parent.mkdir(parents=True, exist_ok=True)  # as MLflow does
    sqlite3.connect(path).close()


def _one_opener_at_a_time(path: Path | None) -> contextlib.AbstractContextManager[object]:
    """For a SQLite store, a lock file beside the database (`mlflow.db.lock`) held while MLflow
    opens it: opening creates or migrates the tables, and MLflow's migrations race each other,
    so of several commands started together on a new store all but one failed ("duplicate
    column name: step", "table latest_metrics already exists")."""
    if path is None:
        return contextlib.nullcontext()
    from filelock import FileLock

    return FileLock(path.with_name(f"{path.name}.lock"))


@dataclasses.dataclass(frozen=True)
class Store:
    """An MLflow tracking store and a client bound to it (the registry lives in the same store)."""

    uri: str
    client: MlflowClient

    @classmethod
    def open(cls, uri: str | None = None) -> Store:
        """`uri`, else $MLFLOW_TRACKING_URI, else the project default; fails fast with a
        BitmojiError when the store cannot be reached or opened."""
        uri = uri or tracking_uri()
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        for key, value in ENVIRONMENT_DEFAULTS.items():
            os.environ.setdefault(key, value)
        if uri == paths.DEFAULT_TRACKING_URI:
            paths.MLRUNS_DIR.mkdir(parents=True, exist_ok=True)
        database = _sqlite_file(uri)
        try:
            with _one_opener_at_a_time(database):
                if database is not None:
                    _open_sqlite_file(database)
                client = MlflowClient(tracking_uri=uri, registry_uri=uri)
                client.search_experiments(max_results=1)
        except Exception as error:  # any failure to reach or open the store
            raise BitmojiError(
                f"cannot use the MLflow tracking store {uri!r}: {failure_reason(error)}. Fix or unset "
                f"{TRACKING_URI_ENV} (the default is {paths.DEFAULT_TRACKING_URI})."
            ) from error
        return cls(uri, client)

    @property
    def artifact_root(self) -> str | None:
        """Where new experiments keep their artifacts (None: the server decides)."""
        return artifact_root(self.uri)

    def find_experiment(self, name: str) -> str | None:
        """The id of experiment `name`, or None when the store has none of that name; an
        experiment found is marked as model training (`mark_model_training`)."""
        found = self.client.get_experiment_by_name(name)
        if found is None:
            return None
        if found.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:
            self.mark_model_training(found.experiment_id)
        return found.experiment_id

    def mark_model_training(self, experiment_id: str) -> None:
        """Tag the experiment as MLflow 3's model-training type, so the UI stays in its
        model-training mode (runs, charts, models) instead of its GenAI one (traces). A store
        that refuses the write (read-only access) is still usable: only the label is missing."""
        try:
            self.client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        except MlflowException as error:
            logging.getLogger(__name__).debug("experiment %s left untagged: %s", experiment_id, error)

    def experiment_id(self, name: str, *, create: bool = True) -> str:
        """The id of experiment `name` (marked as model training); created when missing, or
        with `create=False` a BitmojiError saying there are no runs yet."""
        found = self.find_experiment(name)
        if found is not None:
            return found
        if not create:
            raise BitmojiError(f"no runs yet: experiment {name!r} does not exist (run `bitmoji train`)")
        try:
            return self.client.create_experiment(
                name, artifact_location=self.artifact_root, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}
            )
        except MlflowException as error:  # made by another command since the lookup above
            made = self.find_experiment(name) if error.error_code == "RESOURCE_ALREADY_EXISTS" else None
            if made is None:
                raise
            return made

    def get_run(self, run_id: str) -> Run:
        """The run `run_id`, or a clear error if the store has no such run."""
        try:
            return self.client.get_run(run_id)
        except MlflowException as error:
            raise BitmojiError(f"unknown run id {run_id!r} in {self.uri}") from error

    def run_exists(self, run_id: str) -> bool:
        """Whether the store holds run `run_id`."""
        try:
            self.client.get_run(run_id)
        except MlflowException:
            return False
        return True

    def download(self, *, artifact_uri: str, folder: Path) -> Path:
        """Download `artifact_uri` (runs:/, models:/, file://...) of this store into `folder`."""
        # A registered version's source is `models:/<logged model id>`, which MLflow resolves with
        # a client on the process-wide URI whatever registry_uri says: hence the scoped default.
        scope = self.process_default() if artifact_uri.startswith("models:/") else contextlib.nullcontext()
        with scope:
            return Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=artifact_uri,
                    dst_path=str(folder),
                    tracking_uri=self.uri,
                    registry_uri=self.uri,
                )
            )

    @contextlib.contextmanager
    def process_default(self) -> Iterator[None]:
        """Make this store MLflow's process-wide tracking URI for the duration of the block,
        then restore the previous state. Only for MLflow code that ignores the client's URI
        (see registration.register_version and `download`).

        Public API only: $MLFLOW_TRACKING_URI is what MLflow reads when nobody called
        `mlflow.set_tracking_uri`; when someone did (a user's own code), that value wins over
        the variable, so it is set for the block too and put back after."""
        environment = os.environ.get(TRACKING_URI_ENV)
        previous, pinned = mlflow.get_tracking_uri(), False
        try:
            os.environ[TRACKING_URI_ENV] = self.uri
            pinned = mlflow.get_tracking_uri() != self.uri
            if pinned:
                mlflow.set_tracking_uri(self.uri)
            yield
        finally:
            if pinned:
                mlflow.set_tracking_uri(previous)
            if environment is None:  # set_tracking_uri rewrites the variable too
                os.environ.pop(TRACKING_URI_ENV, None)
            else:
                os.environ[TRACKING_URI_ENV] = environment
