"""The one exception type for user mistakes, and the one way a validation failure becomes a message.

The CLI prints a :class:`UserError`'s message (what was wrong, how to fix it) and exits 2. Every stage config is a
pydantic model; :func:`validation_message` turns its ``ValidationError`` into that one line, naming each bad key and,
for an unknown key, the valid ones — so the refresh, the search, the canary and the tournament all speak alike.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError


class UserError(Exception):
    """A mistake the user can fix (bad data, unknown name, unreachable server); never a bug of ours."""


class DataValidationError(UserError):
    """The data cannot be trained on as it is; the message says what to change (never retried: it fails the same
    way every time)."""


def validation_message(what: str, exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """``invalid <what>: <where>: <problem>; …`` with the valid keys named for a misspelt one."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "(top level)"
        msg = err.get("msg", "invalid")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err.get("type") == "extra_forbidden":
            valid = _valid_keys(model, err.get("loc", ()))
            problems.append(f"unknown key {where!r}" + (f" (valid: {', '.join(valid)})" if valid
                                                        else " (check the spelling)"))
            continue
        problems.append(f"{where}: {msg}")
    return f"invalid {what}: " + "; ".join(problems)


def _valid_keys(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """The fields of the (nested) model that holds the unknown key at ``loc``."""
    current: Any = model
    for part in loc[:-1]:
        field = getattr(current, "model_fields", {}).get(part) if current is not None else None
        annotation = getattr(field, "annotation", None)
        current = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return list(getattr(current, "model_fields", {})) if current is not None else []


def parse_model(model: type[BaseModel], values: Any, what: str) -> Any:
    """``model.model_validate(values)``, with a mistake raised as a :class:`UserError` (one line)."""
    if isinstance(values, model):
        return values
    try:
        return model.model_validate(values if values is not None else {})
    except ValidationError as exc:
        raise UserError(validation_message(what, exc, model)) from None
