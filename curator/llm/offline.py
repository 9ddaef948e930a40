"""The offline caption generator: deterministic professional templates with synonym variation.

Each caption of a triplet takes a different form (seeded order), a different modality
name and a different wording of each finding, with several findings listed in a
rotating order, so ten captions of one image say it ten ways (distinct-2 is measured
by :mod:`curator.llm.diversity`).

Labelled ``generator=template`` on every caption so training teams can tell these
from LLM captions and filter them. It needs no network, so a build always completes.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

import numpy as np

from curator.llm.prompts import PromptFile
from curator.vocab import NORMAL_STATES, STRUCTURES, ZH_NAMES

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
    """Captions from a templates file. Version 3 files word each kind of label its own way
    (``labelled``, ``normal``, ``structure``, ``unlabelled``) and vary the findings' wording and
    order caption by caption; version 1 and 2 files (``labelled`` and ``unlabelled`` only) still load.

    Chinese names come from :data:`curator.vocab.ZH_NAMES` under the file's own ``terms``; a
    label part with no name in the language is listed by :meth:`untranslated`, and such a
    triplet gets no captions in that language (a warning, never a mixed-language caption)."""

    def __init__(self, prompt: PromptFile, seed: int = 0):
        self.prompt = prompt
        self.seed = seed
        self.model = f"curator-{prompt.id.replace('/', '-')}"
        self.missing: dict[str, set[str]] = {}  # language -> label parts without a name there

    def languages(self) -> list[str]:
        return [k for k, v in self.prompt.data.items() if isinstance(v, dict) and "labelled" in v]

    def terms(self, language: str) -> dict[str, str]:
        """Names in ``language``: the vocabulary's, overridden by the file's ``terms``."""
        own = self.prompt.data.get(language, {}).get("terms", {})
        return {**ZH_NAMES, **own} if language == "zh" else dict(own)

    def untranslated(self, triplet: Triplet, language: str) -> list[str]:
        if language == "en":
            return []
        terms = self.terms(language)
        parts = [p.strip() for p in (triplet.label or "").split(",") if p.strip()]
        return [p for p in parts if p not in terms and not p.isdigit()]

    def captions(self, triplet: Triplet, language: str, n: int) -> list[str]:
        spec = self.prompt.data.get(language)
        if spec is None:
            raise KeyError(language)
        missing = self.untranslated(triplet, language)
        if missing:
            self.missing.setdefault(language, set()).update(missing)
            return []
        digest = hashlib.sha256(f"{self.seed}\x00{triplet.id}\x00{language}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
        kind, parts = _kind(triplet.label, spec)
        templates = spec[kind] if kind in spec else spec["labelled" if triplet.label else "unlabelled"]
        terms = self.terms(language)
        modalities = spec.get("modality", {}).get(triplet.modality, [triplet.modality])
        anatomies = spec.get("anatomy", {}).get(triplet.anatomy, [terms.get(triplet.anatomy, triplet.anatomy)])
        order = rng.permutation(len(templates))
        shift = int(rng.integers(0, 1 << 16))
        out: list[str] = []
        for i in range(len(templates)):
            if len(out) >= n:
                break
            finding = _finding(parts, spec, terms, language, i + shift) if parts else ""
            modality = modalities[(i + shift) % len(modalities)]
            anatomy = anatomies[(i // len(modalities) + i + shift) % len(anatomies)]
            text = templates[order[i]].format(
                finding=finding,
                Finding=_cap(finding),
                label=finding,  # version 1 and 2 placeholders
                label_cap=_cap(finding),
                modality=modality,
                Modality=_cap(modality),
                anatomy=anatomy,
                Anatomy=_cap(anatomy),
                anatomy_cap=_cap(anatomy),
            )
            text = _cap(text)  # a template may open with a lower-case modality synonym
            if text not in out:
                out.append(text)
        return out


def _kind(label: str | None, spec: dict) -> tuple[str, list[str]]:
    """Which template set words this label, and the label parts it words."""
    parts = [p.strip() for p in (label or "").split(",") if p.strip()]
    if not parts:
        return "unlabelled", []
    if all(p in NORMAL_STATES for p in parts) and "normal" in spec:
        return "normal", []
    if all(p in STRUCTURES for p in parts) and "structure" in spec:
        return "structure", parts
    return "labelled", parts


def _finding(parts: list[str], spec: dict, terms: dict, language: str, i: int) -> str:
    """The findings of caption ``i``: each in its i-th wording, the list rotated by i."""
    wordings = spec.get("findings", {})
    structures = [p for p in parts if p in STRUCTURES]
    findings = [p for p in parts if p not in STRUCTURES] or structures
    if findings is structures:
        structures = []
    words = []
    for k, part in enumerate(findings):
        if part.isdigit():
            words.append(spec.get("graded", "grade {n}").format(n=part))
            continue
        names = wordings.get(part) or [terms.get(part, part)]
        words.append(names[(i + k + i // len(findings)) % len(names)])
    if len(words) > 1:
        # a different order each caption: every permutation of up to four findings, then rotations
        orders = list(itertools.permutations(range(len(words)))) if len(words) <= 4 else None
        order = orders[i % len(orders)] if orders else [(j + i) % len(words) for j in range(len(words))]
        words = [words[j] for j in order]
    where = [terms.get(p, p) for p in structures]
    if language == "zh":
        text = "、".join(words)
        return f"累及{'、'.join(where)}的{text}" if where else text
    text = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    return f"{text} involving the {' and '.join(where)}" if where else text


def _translate(text: str, terms: dict, language: str) -> str:
    if not text:
        return text
    if language == "zh":
        terms = {**ZH_NAMES, **terms}
    parts = [terms.get(p.strip(), p.strip()) for p in text.split(",")]
    if language == "en":
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    sep = "、" if language == "zh" else ", "
    return sep.join(terms.get(p, p) for p in parts)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:] if text and text[0].isascii() else text
