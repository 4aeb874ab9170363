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

from nas.dates import parse_iso_utc

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


class RowEncoder:
    """The fitted ``ColumnTransformer`` of :func:`pipelines.preprocessing.build_preprocessor` compiled to plain
    numpy for a few rows at a time: the gateway answers one-row requests, where pandas and scikit-learn's per-call
    checks cost milliseconds and the network microseconds. Built from the fitted parameters (medians, scales,
    categories) and checked against scikit-learn's own ``transform`` on probe rows when built: any difference, or
    a transformer of another shape, and :meth:`build` returns None (the caller keeps scikit-learn)."""

    def __init__(self, blocks: list[tuple[str, list[int], dict]], width: int, kinds: list[str]) -> None:
        self.blocks = blocks
        self.width = width
        self.kinds = kinds

    @classmethod
    def build(cls, preprocessor: Any, schema: Sequence[dict]) -> RowEncoder | None:
        names = [c["name"] for c in schema]
        blocks = []
        try:
            for name, pipe, columns in preprocessor.transformers_:
                if pipe == "drop" or name == "remainder":
                    continue
                steps = dict(pipe.named_steps)
                idx = [names.index(c) for c in columns]
                fill = list(steps["impute"].statistics_)
                if name == "num":
                    blocks.append(("num", idx, {"fill": np.asarray(fill, dtype=np.float64),
                                                "mean": steps["scale"].mean_, "scale": steps["scale"].scale_}))
                elif name == "cat":
                    cats = [{str(v): k for k, v in enumerate(c)} for c in steps["onehot"].categories_]
                    blocks.append(("cat", idx, {"fill": [str(v) for v in fill], "cats": cats}))
                elif name == "ord":
                    cats = [{str(v): k for k, v in enumerate(c)} for c in steps["ordinal"].categories_]
                    blocks.append(("ord", idx, {"fill": [str(v) for v in fill], "cats": cats,
                                                "mean": steps["scale"].mean_, "scale": steps["scale"].scale_}))
                elif name == "date":  # pipelines.date_features.DateParts: the parts of each column, then as "num"
                    blocks.append(("date", idx, {"hours": list(steps["parts"].hours_),
                                                 "fill": np.asarray(fill, dtype=np.float64),
                                                 "mean": steps["scale"].mean_, "scale": steps["scale"].scale_}))
                else:
                    return None
            width = len(preprocessor.get_feature_names_out())
        except (AttributeError, KeyError, ValueError, TypeError):
            return None
        encoder = cls(blocks, width, [c["type"] for c in schema])
        return encoder if encoder._agrees(preprocessor, schema) else None

    def encode(self, rows: Sequence[Sequence[Any]]) -> np.ndarray:
        """Rows (values in schema order, ``None`` for missing) -> float32 features, as the transformer would."""
        out = np.zeros((len(rows), self.width), dtype=np.float64)
        for r, row in enumerate(rows):
            at = 0
            for kind, idx, p in self.blocks:
                if kind == "num":
                    values = np.array([_number(row[i]) for i in idx], dtype=np.float64)
                    values = np.where(np.isnan(values), p["fill"], values)
                    out[r, at:at + len(idx)] = (values - p["mean"]) / p["scale"]
                    at += len(idx)
                    continue
                if kind == "date":
                    values = np.array([part for i, hour in zip(idx, p["hours"], strict=True)
                                       for part in _date_parts(row[i], hour)], dtype=np.float64)
                    values = np.where(np.isnan(values), p["fill"], values)
                    out[r, at:at + len(values)] = (values - p["mean"]) / p["scale"]
                    at += len(values)
                    continue
                for k, i in enumerate(idx):
                    value = row[i]
                    key = p["fill"][k] if value is None or (isinstance(value, float) and np.isnan(value)) \
                        else _category(value)
                    code = p["cats"][k].get(key)
                    if kind == "cat":
                        if code is not None:  # an unseen category: all zeros (handle_unknown="ignore")
                            out[r, at + code] = 1.0
                        at += len(p["cats"][k])
                    else:
                        out[r, at] = ((-1 if code is None else code) - p["mean"][k]) / p["scale"][k]
                        at += 1
        return out.astype(np.float32)

    def _agrees(self, preprocessor: Any, schema: Sequence[dict]) -> bool:
        """Probe rows (each known category, unseen values, missing cells) encode alike both ways."""
        probes: list[list[Any]] = [[None] * len(schema)]
        for kind, idx, p in self.blocks:
            if kind == "date":
                for i in idx:
                    for stamp in DATE_PROBES:
                        row = [_probe(c) for c in schema]
                        row[i] = stamp
                        probes.append(row)
            elif kind != "num":
                for k, i in enumerate(idx):
                    for category in [*p["cats"][k], "\x00unseen"]:
                        row = [_probe(c) for c in schema]
                        row[i] = _category_probe(schema[i]["type"], category)
                        probes.append(row)
        probes.append([_probe(c, 1.5) for c in schema])
        frame = pd.DataFrame(probes, columns=[c["name"] for c in schema])
        expected = np.asarray(preprocessor.transform(coerce_frame(frame, schema)), dtype=np.float32)
        return expected.shape == (len(probes), self.width) and np.allclose(self.encode(probes), expected, atol=1e-5)


def _number(value: Any) -> float:
    return np.nan if value is None else float(value)


def _probe(column: dict, number: float = 0.25) -> Any:
    if column.get("format") == "datetime":
        return "2024-03-05 07:00"
    return {"double": number, "boolean": True}.get(column["type"], "a")


def _category_probe(kind: str, category: str) -> Any:
    """A client's value for ``category`` in a column of schema type ``kind``: a boolean, a number (an integer
    column declared categorical is typed ``double``: an unseen code is an unseen number, not text), or text."""
    if kind == "boolean":
        return category == "True"
    if kind == "double":
        return UNSEEN_CODE if category == "\x00unseen" else float(category)
    return category


UNSEEN_CODE = -987654321.0
DATE_PROBES = ("2024-06-01 21:30", "2024-06-01", "2024-06-01T21:30:00Z", "2024-06-01T23:30:00+02:00",
               "2023-12-31 23:59:59.5", "not a date", "2024-02-30", "")
"""Probe dates for the compiled encoder's self-check: with and without times and zones, and cells pandas'
ISO-8601 parser gives NaT for."""


def _date_parts(value: Any, hour: bool) -> list[float]:
    """:class:`pipelines.date_features.DateParts` for one cell: year, month, weekday (Monday 0), day of year (and
    hour), in UTC (the same :func:`nas.dates.parse_iso_utc`); NaN for a missing cell or one that is not a date."""
    stamp = parse_iso_utc(value)
    if stamp is None:
        return [np.nan] * (5 if hour else 4)
    parts = [stamp.year, stamp.month, stamp.weekday(), stamp.timetuple().tm_yday]
    return [float(v) for v in parts] + ([float(stamp.hour)] if hour else [])


def _vocabulary(preprocessor: Any) -> dict[str, frozenset[str] | None]:
    """``{column: the categories fitted (as :func:`_category` spells them)}`` for category columns, ``None`` for a
    date column: what :meth:`TableClassifier.input_flags` checks a value against."""
    vocab: dict[str, frozenset[str] | None] = {}
    for name, pipe, columns in getattr(preprocessor, "transformers_", []):
        if pipe == "drop" or name == "remainder" or not hasattr(pipe, "named_steps"):
            continue
        step = pipe.named_steps.get("onehot") or pipe.named_steps.get("ordinal")
        if name == "date":
            vocab.update({str(c): None for c in columns})
        elif step is not None:
            for column, cats in zip(columns, step.categories_, strict=True):
                vocab[str(column)] = frozenset(_category(v) for v in cats)
    return vocab


class TableClassifier(mlflow.pyfunc.PythonModel):
    """Raw rows -> fitted ``ColumnTransformer`` -> the network (:class:`nas.export.FlatInputClassifier`) -> softmax
    (a regression, ``classes`` empty: the network's value in the target's units).

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

    def encode_records(self, records: Sequence[dict]) -> np.ndarray:
        """Validated named rows (every schema column, ``None`` for missing) -> features: the compiled
        :class:`RowEncoder` (built once, lazily: models pickled before it existed load too), else scikit-learn."""
        if "_rows" not in self.__dict__:
            self._rows = RowEncoder.build(self.preprocessor, self.schema)
        if self._rows is None:
            return self.encode(pd.DataFrame.from_records(list(records), columns=self.columns))
        return self._rows.encode([[r.get(c) for c in self.columns] for r in records])

    def input_flags(self, records: Sequence[dict]) -> list[dict[str, str]]:
        """Per row, ``{column: kind}`` for the values the encoder cannot use as sent, though the contract takes
        them: ``unseen_category`` (a category the training split never had: one-hot all zeros, ordinal -1) and
        ``unparseable`` (a date column's text that is not a date: imputed). Missing cells are not flagged (the
        schema says which may be missing). Built lazily from the fitted transformer, so models pickled before
        this method existed flag too."""
        if "_vocab" not in self.__dict__:
            self._vocab = _vocabulary(self.preprocessor)
        flags = []
        for record in records:
            row = {}
            for name, known in self._vocab.items():
                value = record.get(name)
                if value is None or (isinstance(value, float) and np.isnan(value)):
                    continue
                if known is None:
                    if parse_iso_utc(value) is None:
                        row[name] = "unparseable"
                elif _category(value) not in known:
                    row[name] = "unseen_category"
            flags.append(row)
        return flags

    def logits(self, frame: pd.DataFrame) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(torch.from_numpy(self.encode(frame)))

    @property
    def regression(self) -> bool:
        """No classes: the network is a :class:`nas.export.FlatInputRegressor` answering values in the target's
        units."""
        return not self.classes

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Class probabilities ``(n, C)``, or a regression's values ``(n, 1)``."""
        if self.regression:
            return self.logits(frame).float().numpy()
        return torch.softmax(self.logits(frame).float(), dim=1).numpy()

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        probs = self.predict_proba(frame)
        if self.regression:
            return pd.DataFrame({"prediction": probs[:, 0].astype(np.float64)}, index=frame.index)
        out = pd.DataFrame(probs, columns=[str(c) for c in self.classes], index=frame.index)
        out.insert(0, "prediction", [self.classes[i] for i in probs.argmax(axis=1)])
        return out
