"""The prepared data a canary replays, loaded without the heavy stack (MLflow, Prefect): the traffic process
imports only this, so it starts sending within seconds even on a busy machine. Also how the prepared data reaches
cluster workers: through the MLflow artifact store (imported only there), not the refresh's local path."""

from __future__ import annotations

import hashlib
import tempfile
import threading
from pathlib import Path

from nas.data import TaskData
from pipelines.errors import UserError


def load_prepared(data_path: str) -> TaskData:
    """The prepared data of a refresh, with the ``prod`` split the traffic replays."""
    path = Path(data_path)
    if not path.is_file():
        raise UserError(f"prepared data {data_path!r} does not exist; run the refresh's prepare_data stage first")
    data = TaskData.load(path)
    if data.x_prod is None or len(data.x_prod) == 0:
        raise UserError(f"prepared data {data_path!r} has no 'prod' split to replay; re-run prepare_data")
    return data


# -- the prepared data shipped to cluster workers ------------------------------------------------------------------
_SHIPPED: dict[str, TaskData] = {}
_SHIPPED_LOCK = threading.Lock()


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a file's bytes: the shipped data's name and its check on arrival."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publish_prepared(data_path: str, run_id: str, tracking_uri: str) -> dict[str, str]:
    """Log the prepared ``.npz`` once as an artifact of ``run_id`` (``prepared/<sha256>/``) and return the reference
    a task loads it by (:func:`load_shipped`): the artifact's URI, the tracking URI that resolves it and the digest.
    A worker on another host needs the artifact store, never the refresh's local path."""
    from mlflow.tracking import MlflowClient

    digest = file_digest(data_path)
    folder = f"prepared/{digest[:16]}"
    client = MlflowClient(tracking_uri=tracking_uri)
    client.log_artifact(run_id, data_path, artifact_path=folder)
    base = client.get_run(run_id).info.artifact_uri.rstrip("/")
    return {"uri": f"{base}/{folder}/{Path(data_path).name}", "tracking_uri": tracking_uri, "sha256": digest}


def local_ref(data_path: str) -> dict[str, str]:
    """A reference to the prepared file itself, for tasks that run in the refresh's own process (serial, threads)."""
    return {"path": str(Path(data_path).resolve())}


def load_shipped(ref: dict[str, str]) -> TaskData:
    """The data a reference names (:func:`publish_prepared` or :func:`local_ref`), read once per process (a cache
    keyed by digest or path); a download is checked against its digest: a copy that differs is never trained on."""
    key = ref.get("sha256") or ref["path"]
    with _SHIPPED_LOCK:
        if key not in _SHIPPED:
            while len(_SHIPPED) >= 4:  # a long-lived worker serves many refreshes: keep the latest few
                del _SHIPPED[next(iter(_SHIPPED))]
            _SHIPPED[key] = TaskData.load(ref["path"]) if "path" in ref else _download(ref)
        return _SHIPPED[key]


def _download(ref: dict[str, str]) -> TaskData:
    import mlflow

    target = Path(tempfile.gettempdir()) / "nasops-shipped" / ref["sha256"][:16]
    target.mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(artifact_uri=ref["uri"], dst_path=str(target),
                                                tracking_uri=ref["tracking_uri"])
    if file_digest(local) != ref["sha256"]:
        raise ValueError(f"the prepared data downloaded from {ref['uri']} does not match its digest")
    return TaskData.load(local)
