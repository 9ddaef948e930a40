"""Versioned prompt files: ``prompts/<id>.toml``; the id and file hash travel with every caption."""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path

from curator.errors import CuratorError
from curator.registry import project_dir

# Names for prompt files without a [languages] table (caption/v1).
LANGUAGE_NAMES = {"en": "English", "zh": "Simplified Chinese"}


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


class CaptionPrompt:
    """An LLM caption prompt file rendered into chat messages for one triplet and language.

    The file holds ``system``, ``user`` (and ``user_unlabelled`` for images without a
    finding) and a ``[languages.<code>]`` table with the language's name and style
    guidance. The rendered messages, not the file, are what the cache keys on.
    """

    def __init__(self, prompt: PromptFile):
        missing = [k for k in ("system", "user") if not isinstance(prompt.data.get(k), str)]
        if missing:
            raise CuratorError(f"prompt '{prompt.id}' lacks {', '.join(missing)}")
        self.file = prompt

    @property
    def id(self) -> str:
        return self.file.id

    @property
    def sha256(self) -> str:
        return self.file.sha256

    def languages(self) -> list[str]:
        return sorted(self.file.data.get("languages") or LANGUAGE_NAMES)

    def messages(
        self, label: str | None, anatomy: str, modality: str, language: str, n: int, hint: str = ""
    ) -> list[dict]:
        data = self.file.data
        lang = data.get("languages", {}).get(language)
        if lang is None and "languages" not in data and language in LANGUAGE_NAMES:
            lang = {"name": LANGUAGE_NAMES[language]}  # version 1 files have no languages table
        if lang is None:
            raise CuratorError(f"prompt '{self.id}' has no [languages.{language}] table")
        name = lang.get("name", language)
        user = data["user"] if label else data.get("user_unlabelled", data["user"])
        values = {
            "n": n,
            "language_name": name,
            "guidance": lang.get("guidance", ""),
            "label": label or "not given",
            "label_hint": f" ({name} term: {hint})" if hint else "",
            "anatomy": anatomy,
            "modality": modality,
        }
        try:
            return [
                {"role": "system", "content": data["system"].strip().format(**values)},
                {"role": "user", "content": user.strip().format(**values)},
            ]
        except (KeyError, IndexError) as exc:
            raise CuratorError(f"prompt '{self.id}' uses an unknown placeholder: {exc}") from None
