"""The served form of a network trained on a user's table: raw named columns in, class probabilities out.

A table as teams have it (string categories, missing values) is encoded by a scikit-learn ``ColumnTransformer``
fitted on the training split; :class:`TableClassifier` carries that fitted transformer with the network, so the
registered MLflow model takes the same raw rows the user trained on and no caller repeats the encoding. It is an
``mlflow.pyfunc.PythonModel`` pickled by reference to this module: a fresh process that can import ``nas`` loads it
with ``mlflow.pyfunc.load_model`` and predicts a raw ``pandas.DataFrame``.

The input schema is a list of ``{"name", "type", "optional"}`` with type ``double`` (numbers), ``string``
(categories) or ``boolean``; an optional column may be absent or ``None`` (the transformer imputes it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch

COLUMN_TYPES = ("double", "string", "boolean")


def coerce_frame(frame: pd.DataFrame, schema: Sequence[dict]) -> pd.DataFrame:
    """``frame`` as the transformer was fitted on: the schema's columns in order (absent ones all missing), numbers
    as float64, categories as ``str`` with ``NaN`` for missing. One function for training and serving, so the two
    can never encode a value differently."""
    out = {}
    n = len(frame)
    for col in schema:
        name = col["name"]
        values = frame[name] if name in frame.columns else pd.Series([None] * n, index=frame.index)
        if col["type"] == "double":
            out[name] = pd.to_numeric(values, errors="coerce").astype(np.float64)
        else:
            obj = values.astype(object)
            missing = pd.isna(obj)
            out[name] = obj.where(missing, obj.map(_category)).where(~missing, np.nan)
    return pd.DataFrame(out, index=frame.index)


def _category(value: Any) -> str:
    """One spelling per category: ``True`` and ``"True"``, ``3`` and ``3.0`` (from a CSV) name the same value."""
    if isinstance(value, bool | np.bool_):
        return "True" if value else "False"
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


class TableClassifier(mlflow.pyfunc.PythonModel):
    """Raw rows -> fitted ``ColumnTransformer`` -> the network (:class:`nas.export.FlatInputClassifier`) -> softmax.

    ``predict`` (the pyfunc contract) answers a DataFrame with a ``prediction`` column (the class label) and one
    probability column per class; the gateway calls :meth:`predict_proba` with the columns it validated."""

    def __init__(self, preprocessor: Any, module: torch.nn.Module, classes: list, schema: list[dict]) -> None:
        self.preprocessor = preprocessor
        self.module = module.eval()
        self.classes = list(classes)
        self.schema = [dict(c) for c in schema]

    @property
    def columns(self) -> list[str]:
        return [c["name"] for c in self.schema]

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw rows -> the float32 features the network was trained on."""
        encoded = self.preprocessor.transform(coerce_frame(frame, self.schema))
        return np.ascontiguousarray(np.asarray(encoded, dtype=np.float32))

    def logits(self, frame: pd.DataFrame) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(torch.from_numpy(self.encode(frame)))

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return torch.softmax(self.logits(frame).float(), dim=1).numpy()

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        probs = self.predict_proba(frame)
        out = pd.DataFrame(probs, columns=[str(c) for c in self.classes], index=frame.index)
        out.insert(0, "prediction", [self.classes[i] for i in probs.argmax(axis=1)])
        return out
