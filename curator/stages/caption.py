"""Caption: label-only images get captions per unique (label, anatomy, modality) triplet and language.

Never per image: a million CheXpert images share a few thousand triplets. A
sample is label-only when no source text (caption, report) describes it; its
triplet's label is the sorted set of its positive findings, or none (the
unlabelled templates describe modality and anatomy only).
"""

from __future__ import annotations

import logging
from collections import Counter
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
    """The triplet of every label-only sample the corpus keeps, keyed by (merged) sample_id.

    A merged sample pools its members' annotations: it is label-only when no member
    from any source carries text, and its label is the sorted union of every
    member's positive findings. Modality and anatomy are the canonical member's.
    """
    from curator.audit.db import connect  # the index's SQL views; imported here to keep stage imports light
    from curator.stages.index import require_current_index

    require_current_index(corpus)
    con = connect(corpus, ["samples", "members", "annotations"])
    rows = con.execute(
        f"""
        SELECT s.sample_id, any_value(s.modality), any_value(s.anatomy),
               bool_or(coalesce(a.kind IN {TEXT_KINDS}, false)),
               list(DISTINCT a.text ORDER BY a.text) FILTER (WHERE a.kind = 'label' AND a.value = 'positive')
        FROM samples s
        JOIN members mb ON mb.sample_id = s.sample_id
        LEFT JOIN annotations a ON a.sample_id = mb.member_id
        WHERE s.status <> 'held_out' AND s.status <> 'near_duplicate'
        GROUP BY s.sample_id
        ORDER BY s.sample_id
        """
    ).fetchall()
    out = {}
    for sid, modality, anatomy, has_text, positives in rows:
        if has_text:
            continue
        label = ", ".join(positives or []) or None
        out[sid] = Triplet(label, anatomy or "unspecified", modality or "mixed")
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
