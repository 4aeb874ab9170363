"""The prepared data a canary replays, loaded without the heavy stack (MLflow, Prefect): the traffic process
imports only this, so it starts sending within seconds even on a busy machine."""

from __future__ import annotations

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
