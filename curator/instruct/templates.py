"""The instruct templates: ``prompts/instruct/<version>.toml``, one table per language.

Every entry a template phrases records the file's id and sha256 (``prompt_id``,
``prompt_sha256``), like captions. Choices among a list's variants come from the
sample's seeded generator, so the same corpus and seed give the same entries.
"""

from __future__ import annotations

import functools
import string

import numpy as np

from curator.errors import CuratorError
from curator.llm.prompts import PromptFile, load_prompt

SECTIONS = ("caption", "report", "classification", "grounding", "region", "recognition")


class MissingTerm(KeyError):
    """A label or value has no display term in a language whose script needs one."""


class InstructTemplates:
    def __init__(self, prompt: PromptFile):
        self.file = prompt
        self.languages = sorted(k for k, v in prompt.data.items() if isinstance(v, dict) and "caption" in v)
        for lang in self.languages:
            missing = [s for s in SECTIONS if not isinstance(prompt.data[lang].get(s), dict)]
            if missing:
                raise CuratorError(f"templates '{prompt.id}' [{lang}] lacks section(s) {', '.join(missing)}")

    @classmethod
    def load(cls, template_id: str) -> InstructTemplates:
        return cls(load_prompt(template_id))

    @property
    def id(self) -> str:
        return self.file.id

    @property
    def sha256(self) -> str:
        return self.file.sha256

    @property
    def model(self) -> str:
        return f"curator-{self.id.replace('/', '-')}"

    def word(self, lang: str, key: str) -> str:
        return self.file.data[lang][key]

    def terms(self, lang: str) -> dict[str, str]:
        return self.file.data[lang].get("terms", {})

    def known(self) -> set[str]:
        """Every term some language can display: part of the label vocabulary the stage accepts."""
        return {t for lang in self.languages for t in self.terms(lang)}

    def term(self, lang: str, text: str) -> str:
        """``text`` as shown in ``lang``; English falls back to the text itself, other languages raise."""
        terms = self.terms(lang)
        if text in terms:
            return terms[text]
        if lang == "en":
            return text
        raise MissingTerm(text)

    def render(self, lang: str, section: str, key: str, rng: np.random.Generator, **values) -> str:
        variants = self.file.data[lang][section].get(key)
        if not variants:
            raise CuratorError(f"templates '{self.id}' [{lang}.{section}] lacks '{key}'")
        if isinstance(variants, str):
            variants = [variants]
        template = variants[int(rng.integers(len(variants)))]
        for name in _capitalised(template):
            if isinstance(values.get(name), str):
                values[f"{name}_cap"] = cap(values[name])
        try:
            return template.format(**values).strip()
        except (KeyError, IndexError) as exc:
            raise CuratorError(
                f"templates '{self.id}' [{lang}.{section}.{key}] uses unknown placeholder {exc}"
            ) from None


@functools.lru_cache(maxsize=4096)
def _capitalised(template: str) -> tuple[str, ...]:
    """Placeholders a template uses as ``{name_cap}``: the ones worth capitalising."""
    fields = (f for _, f, _, _ in string.Formatter().parse(template) if f)
    return tuple(f.removesuffix("_cap") for f in fields if f.endswith("_cap"))


def cap(text: str) -> str:
    return text[:1].upper() + text[1:] if text and text[0].isascii() else text
