"""The Pareto front of a search logged to its MLflow run: the table and the plot (``nas.pareto`` computes them;
``nas`` imports no MLflow, so the logging lives on the pipeline's side)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.pareto import pareto_plot, pareto_rows


def log_pareto(records: Sequence[Any], objective: str = "accuracy", *, artifact_path: str = "pareto"
               ) -> list[dict[str, Any]]:
    """Log the Pareto table (``<artifact_path>/pareto_table.json``, ``mlflow.log_table``) and plot
    (``<artifact_path>/pareto_front.png``) of all evaluated candidates to the active MLflow run; returns the rows."""
    import tempfile

    import mlflow
    import pandas as pd

    rows = pareto_rows(records, objective)
    if not rows:
        return rows
    mlflow.log_table(pd.DataFrame(rows), artifact_file=f"{artifact_path}/pareto_table.json")
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifact(str(pareto_plot(rows, Path(tmp) / "pareto_front.png", objective)),
                            artifact_path=artifact_path)
    mlflow.log_metric("pareto_front_size", sum(r["on_front"] for r in rows))
    return rows
