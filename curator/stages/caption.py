"""Caption: label-only images get captions per unique (label, anatomy, modality) triplet and language.

Never per image: a million CheXpert images share a few thousand triplets. A
sample is label-only when no source text (caption, report) describes it; its
triplet's label is the sorted set of its positive findings, or none (the
unlabelled templates describe modality and anatomy only).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from curator.adapters.base import short_hash
from curator.config import CaptionSettings
from curator.errors import CuratorError
from curator.llm.offline import GENERATOR, TemplateGenerator, Triplet, _translate
from curator.llm.prompts import load_prompt
from curator.llm.validate import validate
from curator.storage import Corpus

log = logging.getLogger(__name__)
TEXT_KINDS = ("caption", "report")


@dataclass
class CaptionResult:
    triplets: int = 0
    captions: int = 0
    by_generator: Counter = field(default_factory=Counter)
    by_validation: Counter = field(default_factory=Counter)
    skipped: bool = False


def sample_triplets(corpus: Corpus) -> dict[str, Triplet]:
    """The triplet of every label-only sample, keyed by sample_id."""
    images = corpus.read_table("images", ["sample_id", "modality", "anatomy"]).to_pylist()
    notes = corpus.read_table("annotations", ["sample_id", "kind", "text", "value"]).to_pylist()
    positives: dict[str, set[str]] = defaultdict(set)
    has_text: set[str] = set()
    for a in notes:
        if a["kind"] in TEXT_KINDS:
            has_text.add(a["sample_id"])
        elif a["kind"] == "label" and a["value"] == "positive":
            positives[a["sample_id"]].add(a["text"])
    out = {}
    for img in images:
        sid = img["sample_id"]
        if sid in has_text:
            continue
        label = ", ".join(sorted(positives[sid])) or None
        out[sid] = Triplet(label, img["anatomy"] or "unspecified", img["modality"] or "mixed")
    return out


def run_caption(corpus: Corpus, settings: CaptionSettings) -> CaptionResult:
    triplets = sorted(set(sample_triplets(corpus).values()), key=lambda t: t.id)
    templates = load_prompt(settings.templates)
    generator = TemplateGenerator(templates, seed=settings.seed)
    unknown = [lang for lang in settings.languages if lang not in generator.languages()]
    if unknown:
        raise CuratorError(f"no offline templates for language(s) {', '.join(unknown)} in {templates.id}")
    fingerprint = short_hash(settings.model_dump_json(), templates.sha256, *[t.id for t in triplets], n=32)
    log.info(
        "caption: %d unique triplets x %d languages = %d generator calls planned",
        len(triplets),
        len(settings.languages),
        len(triplets) * len(settings.languages),
    )
    marker = corpus.marker("caption", "all")
    if marker and marker["fingerprint"] == fingerprint and corpus.table_parts("captions"):
        return CaptionResult(
            marker["triplets"],
            marker["captions"],
            Counter(marker["by_generator"]),
            Counter(marker["by_validation"]),
            skipped=True,
        )
    corpus.clear_marker("caption", "all")
    result = CaptionResult(triplets=len(triplets))

    def rows():
        for t in triplets:
            for lang in settings.languages:
                terms = _label_terms(t, lang, templates.data)
                seen: set[str] = set()
                for i, text in enumerate(generator.captions(t, lang, settings.captions_per_triplet)):
                    verdict = validate(text, terms, lang, seen)
                    seen.add(text)
                    result.captions += 1
                    result.by_generator[GENERATOR] += 1
                    result.by_validation[verdict] += 1
                    yield {
                        "triplet_id": t.id,
                        "label": t.label,
                        "anatomy": t.anatomy,
                        "modality": t.modality,
                        "language": lang,
                        "caption_index": i,
                        "caption": text,
                        "generator": GENERATOR,
                        "model": generator.model,
                        "prompt_id": templates.id,
                        "prompt_sha256": templates.sha256,
                        "validation": verdict,
                    }

    for part in corpus.table_parts("captions"):
        corpus.fs.rm(part)
    corpus.write_table("captions", GENERATOR, rows())
    corpus.set_marker(
        "caption",
        "all",
        {
            "fingerprint": fingerprint,
            "triplets": result.triplets,
            "captions": result.captions,
            "by_generator": dict(result.by_generator),
            "by_validation": dict(result.by_validation),
        },
    )
    return result


def _label_terms(t: Triplet, language: str, data: dict) -> list[str]:
    if not t.label:
        return []
    terms = data.get(language, {}).get("terms", {})
    return [_translate(p.strip(), terms, language) for p in t.label.split(",")][:1]
