"""Versioned prompt files: ``prompts/<id>.toml``; the id and file hash travel with every caption."""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path

from curator.errors import CuratorError
from curator.registry import project_dir


@dataclass(frozen=True)
class PromptFile:
    id: str
    sha256: str
    data: dict


def prompts_dir() -> Path:
    return project_dir("prompts", "CURATOR_PROMPTS")


def load_prompt(prompt_id: str, base: Path | None = None) -> PromptFile:
    path = Path(base or prompts_dir()) / f"{prompt_id}.toml"
    if not path.is_file():
        raise CuratorError(f"prompt '{prompt_id}' not found: {path}")
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CuratorError(f"prompt '{prompt_id}' is not valid TOML: {exc}") from None
    return PromptFile(prompt_id, hashlib.sha256(raw).hexdigest(), data)
