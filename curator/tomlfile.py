"""Reading a TOML file into a pydantic model, with every failure as one clear line."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from curator.errors import CuratorError

M = TypeVar("M", bound=BaseModel)


def format_validation(err: ValidationError, default_loc: str = "") -> str:
    """The first problem as ``field.path: message``, with a count of the rest."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or default_loc
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{loc}: {first['msg']}{more}"


def load_model(path: Path, model: type[M], error: type[CuratorError], what: str) -> M:
    """Parse and validate ``path``; raise ``error`` naming the file for a missing file, bad TOML or bad field."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{path}: {format_validation(exc, what)}") from None
