"""The offline caption generator: deterministic professional templates with synonym variation.

Labelled ``generator=template`` on every caption so training teams can tell these
from LLM captions and filter them. It needs no network, so a build always completes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from curator.llm.prompts import PromptFile

GENERATOR = "template"


@dataclass(frozen=True)
class Triplet:
    label: str | None
    anatomy: str
    modality: str

    @property
    def id(self) -> str:
        key = "\x00".join([self.label or "", self.anatomy, self.modality])
        return hashlib.sha256(key.encode()).hexdigest()[:16]


class TemplateGenerator:
    def __init__(self, prompt: PromptFile, seed: int = 0):
        self.prompt = prompt
        self.seed = seed
        self.model = f"curator-{prompt.id.replace('/', '-')}"

    def languages(self) -> list[str]:
        return [k for k, v in self.prompt.data.items() if isinstance(v, dict) and "labelled" in v]

    def captions(self, triplet: Triplet, language: str, n: int) -> list[str]:
        spec = self.prompt.data.get(language)
        if spec is None:
            raise KeyError(language)
        templates = spec["labelled"] if triplet.label else spec["unlabelled"]
        modalities = spec.get("modality", {}).get(triplet.modality, [triplet.modality])
        terms = spec.get("terms", {})
        label = _translate(triplet.label or "", terms, language)
        anatomy = _translate(triplet.anatomy, terms, language)
        candidates = []
        for template in templates:
            for modality in modalities:
                text = template.format(
                    label=label,
                    label_cap=_cap(label),
                    modality=modality,
                    Modality=_cap(modality),
                    anatomy=anatomy,
                    anatomy_cap=_cap(anatomy),
                )
                text = _cap(text)  # a template may open with a lower-case modality synonym
                if text not in candidates:
                    candidates.append(text)
        digest = hashlib.sha256(f"{self.seed}\x00{triplet.id}\x00{language}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
        order = rng.permutation(len(candidates))
        return [candidates[i] for i in order[: min(n, len(candidates))]]


def _translate(text: str, terms: dict, language: str) -> str:
    if not text:
        return text
    parts = [terms.get(p.strip(), p.strip()) for p in text.split(",")]
    if language == "en":
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    sep = "、" if language == "zh" else ", "
    return sep.join(terms.get(p, p) for p in parts)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:] if text and text[0].isascii() else text
