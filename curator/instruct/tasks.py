"""Task builders: one sample's annotations and metadata -> its training entries.

Image-centric (IMAX): a sample's entries are built together, from everything every
member source says about the image. Each builder yields :class:`Entry` objects or
:class:`Drop` objects (bad input, counted with a reason, never written). Choices
(template variants, distractors, negatives) come from the sample's own seeded
generator, so one sample's entries never depend on another's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from curator.instruct.boxes import BadBox, normalise, show
from curator.instruct.templates import InstructTemplates, MissingTerm

TEMPLATE = "template"  # question and answer phrased by prompts/instruct/<v>.toml
SOURCE = "source"  # question and answer verbatim from the source (VQA pairs)

# task -> task family (the unit recipes weight mixtures by; GMAI-VL's stage mix)
FAMILIES = {
    "caption": "caption",
    "report": "report",
    "classification": "instruction",
    "vqa": "instruction",
    "recognition": "instruction",
    "grounding": "grounding",
    "region": "grounding",
}
TASKS = tuple(FAMILIES)
FAMILY_NAMES = ("caption", "instruction", "report", "grounding")
NO_FINDING = "no finding"
CLOSED_ANSWERS = {"yes", "no", "是", "否", "有", "没有", "不是", "无"}
PLANES = ("axial", "coronal", "sagittal")
UNSHOWN = {None, "", "mixed", "unspecified"}

# Drop reasons (counted per reason in the stage's result and marker).
DROPS = {
    "box_outside_image": "a box lies outside its image or has no area",
    "empty_answer": "a question, answer, caption or report is empty",
    "unknown_label": "a label neither curator.vocab nor the templates' terms know",
    "no_term": "a label has no term in a template language (that language's entry is left out)",
    "no_template_language": "a source text is in a language the templates do not cover",
}


@dataclass
class SampleView:
    sample_id: str
    source_id: str  # the canonical member's source
    split: str
    modality: str | None
    anatomy: str | None
    plane: str | None
    width: int
    height: int
    notes: list[dict]  # annotations of every member: source_id, kind, text, value, native, language, payload, id


@dataclass
class Entry:
    task: str
    form: str
    language: str
    turns: list[tuple[str, str]]  # (human, gpt) pairs
    source_id: str
    generator: str = TEMPLATE
    origin: dict = field(default_factory=dict)
    # What an LLM rewrite of the answer must keep (curator.llm.answers.check_rewrite): strings
    # verbatim, and a yes/no answer's polarity. None: the answer is not rewritten (source texts).
    keep: tuple[str, ...] | None = None
    polarity: bool | None = None
    # A region entry's finding (canonical), its term in the entry's language and its box: what
    # an LLM region description is written from
    region: dict | None = None


@dataclass
class Drop:
    reason: str
    message: str
    source_id: str


@dataclass
class Context:
    """What every sample's builders share: templates, languages, the label vocabulary, captions."""

    templates: InstructTemplates
    languages: list[str]
    tasks: set[str]
    known_labels: set[str]
    # (source_id, modality, anatomy) -> labels that source gives images of that domain
    vocabulary: dict[tuple, list[str]]
    # triplet_id -> language -> [(caption_index, caption, generator, model)]
    captions: dict[str, dict[str, list[tuple]]]
    max_options: int = 4
    max_yesno: int = 4
    max_regions: int = 4


def build_entries(view: SampleView, ctx: Context, rng: np.random.Generator) -> Iterator[Entry | Drop]:
    labels = _labels(view, ctx)
    drops = labels.pop("drops")
    yield from drops
    for covers, builder in BUILDERS:
        if ctx.tasks.intersection(covers):
            yield from builder(view, ctx, rng, labels)


def _labels(view: SampleView, ctx: Context) -> dict:
    """Known labels by value, the sources that gave them, and drops for unknown ones."""
    out: dict = {"positive": set(), "negative": set(), "uncertain": set(), "sources": set(), "boxes": {}, "drops": []}
    for n in view.notes:
        if n["kind"] != "label":
            continue
        text = (n["text"] or "").strip()
        if text not in ctx.known_labels:
            out["drops"].append(
                Drop("unknown_label", f"label '{n['native'] or text}' is not in the vocabulary", n["source_id"])
            )
            continue
        out["sources"].add(n["source_id"])
        value = n["value"] if n["value"] in ("positive", "negative", "uncertain") else "positive"
        out[value].add(text)
        boxes = [[b["x0"], b["y0"], b["x1"], b["y1"]] for b in n.get("boxes") or []] if value == "positive" else None
        if boxes:
            out["boxes"].setdefault(text, (n["source_id"], n["annotation_id"], []))[2].extend(boxes)
    pos = out["positive"]
    if len(pos) > 1 and NO_FINDING in pos:
        pos.discard(NO_FINDING)  # "no finding" beside a finding is an inconsistency; the finding wins
    out["negative"] -= pos | out["uncertain"]
    pool: set[str] = set()
    for source in out["sources"]:
        pool.update(ctx.vocabulary.get((source, view.modality, view.anatomy), []))
    out["vocabulary"] = sorted(pool)
    out["absent"] = sorted(pool - pos - out["uncertain"])
    return out


def _say(ctx: Context, lang: str, text: str) -> str:
    return ctx.templates.term(lang, text)


def _per_language(ctx: Context, view: SampleView, task: str, make) -> Iterator[Entry | Drop]:
    """Run ``make(lang)`` for each template language; a label without a term drops that language only."""
    for lang in ctx.languages:
        try:
            entry = make(lang)
        except MissingTerm as exc:
            yield Drop("no_term", f"{task}: no {lang} term for '{exc.args[0]}' in {ctx.templates.id}", view.source_id)
            continue
        if entry is not None:
            yield entry


def _text_language(ctx: Context, note: dict) -> str | None:
    lang = note["language"] or "en"
    return lang if lang in ctx.templates.languages else None


def captions(view: SampleView, ctx: Context, rng, labels) -> Iterator[Entry | Drop]:
    """Source captions in their own language, else one generated caption of the sample's triplet per language."""
    texts = [n for n in view.notes if n["kind"] == "caption"]
    for n in texts:
        if not (n["text"] or "").strip():
            yield Drop("empty_answer", "empty source caption", n["source_id"])
            continue
        lang = _text_language(ctx, n)
        if lang is None:
            yield Drop("no_template_language", f"caption in '{n['language']}'", n["source_id"])
            continue
        q = ctx.templates.render(lang, "caption", "q", rng)
        yield Entry("caption", "source", lang, [(q, n["text"].strip())], n["source_id"], origin=_origin(n))
    if texts or any(n["kind"] == "report" for n in view.notes):
        return
    triplet = caption_triplet(view, labels)
    for lang in ctx.languages:
        options = ctx.captions.get(triplet, {}).get(lang, [])
        if not options:
            continue
        index, text, generator, model = options[int(rng.integers(len(options)))]
        q = ctx.templates.render(lang, "caption", "q", rng)
        origin = {"triplet_id": triplet, "caption_index": index, "caption_generator": generator, "caption_model": model}
        yield Entry("caption", "generated", lang, [(q, text)], view.source_id, origin=origin)


def caption_triplet(view: SampleView, labels: dict) -> str:
    """The caption stage's triplet id of a label-only sample (curator.stages.caption.sample_triplets)."""
    from curator.llm.offline import Triplet

    positives = sorted(
        {n["text"] for n in view.notes if n["kind"] == "label" and n["value"] == "positive" and n["text"]}
    )
    if len(positives) > 1 and NO_FINDING in positives:
        positives = [p for p in positives if p != NO_FINDING]
    return Triplet(", ".join(positives) or None, view.anatomy or "unspecified", view.modality or "mixed").id


def reports(view: SampleView, ctx: Context, rng, labels) -> Iterator[Entry | Drop]:
    """Findings and impression as separate entries; the whole report only where the source gave no sections."""
    notes = [n for n in view.notes if n["kind"] == "report"]
    sectioned = {n["source_id"] for n in notes if json.loads(n["payload"] or "{}").get("section")}
    for n in notes:
        section = str(json.loads(n["payload"] or "{}").get("section") or "").lower()
        form = section if section in ("findings", "impression") else "full"
        if form == "full" and (section or n["source_id"] in sectioned):
            continue
        body = (n["text"] or "").strip()
        if not body:
            yield Drop("empty_answer", f"empty report {form}", n["source_id"])
            continue
        lang = _text_language(ctx, n)
        if lang is None:
            yield Drop("no_template_language", f"report in '{n['language']}'", n["source_id"])
            continue
        try:
            modality = _say(ctx, lang, view.modality or "mixed")
        except MissingTerm:
            modality = _say(ctx, lang, "mixed")
        q = ctx.templates.render(lang, "report", form, rng, modality=modality)
        yield Entry("report", form, lang, [(q, body)], n["source_id"], origin=_origin(n))


def classification(view: SampleView, ctx: Context, rng, labels) -> Iterator[Entry | Drop]:
    pos, neg, absent = sorted(labels["positive"]), sorted(labels["negative"]), labels["absent"]
    if not labels["sources"]:
        return
    source = sorted(labels["sources"])[0]
    t = ctx.templates
    letters = "ABCDEFGHIJ"
    # single label: one answer among distractors from the same source and domain
    if len(pos) == 1 and absent:
        k = min(ctx.max_options - 1, len(absent))
        options = [pos[0], *rng.choice(absent, size=k, replace=False).tolist()]
        options = [options[i] for i in rng.permutation(len(options))]
        answer = options.index(pos[0])

        def single(lang):
            shown = [_say(ctx, lang, o) for o in options]
            listing = "\n".join(f"{letters[i]}. {o}" for i, o in enumerate(shown))
            modality = _modality(ctx, lang, view)
            q = t.render(lang, "classification", "single_q", rng, options=listing, modality=modality)
            a = t.render(lang, "classification", "single_a", rng, answer=f"{letters[answer]}. {shown[answer]}")
            return Entry("classification", "single", lang, [(q, a)], source, keep=(letters[answer], shown[answer]))

        yield from _per_language(ctx, view, "classification", single)
    # multi label: the sample carries several labels (a multi-label source) -> which are present?
    if len(pos) + len(neg) + len(labels["uncertain"]) >= 2:
        extra = [x for x in absent if x not in pos]
        k = min(len(extra), max(ctx.max_options - len(pos), 2))
        options = pos + (rng.choice(extra, size=k, replace=False).tolist() if k else [])
        options = [options[i] for i in rng.permutation(len(options))]
        if len(options) >= 2:

            def multi(lang):
                shown = [_say(ctx, lang, o) for o in options]
                sep = t.word(lang, "list_sep")
                present = [s for o, s in zip(options, shown, strict=True) if o in pos]
                q = t.render(
                    lang, "classification", "multi_q", rng, options=sep.join(shown), modality=_modality(ctx, lang, view)
                )
                a = (
                    t.render(lang, "classification", "multi_a", rng, labels=sep.join(present))
                    if present
                    else t.word(lang, "none_of_them")
                )
                return Entry("classification", "multi", lang, [(q, a)], source, keep=tuple(present) or None)

            yield from _per_language(ctx, view, "classification", multi)
    # yes/no: as many "no" questions (explicit negatives first, then labels the source could give) as "yes"
    findings = [p for p in pos if p != NO_FINDING]
    negatives = [x for x in neg if x != NO_FINDING]
    others = [x for x in absent if x not in negatives and x != NO_FINDING]
    negatives = _sample(rng, negatives, ctx.max_yesno // 2) + _sample(rng, others, ctx.max_yesno // 2)
    k = min(len(findings), len(negatives), ctx.max_yesno // 2)
    asked = [(x, True) for x in _sample(rng, findings, k)] + [(x, False) for x in negatives[:k]]
    asked = [asked[i] for i in rng.permutation(len(asked))]
    for label, present in asked:

        def yesno(lang, label=label, present=present):
            q = t.render(
                lang,
                "classification",
                "yesno_q",
                rng,
                label=_say(ctx, lang, label),
                modality=_modality(ctx, lang, view),
            )
            a = t.word(lang, "yes" if present else "no")
            return Entry("classification", "yesno", lang, [(q, a)], source, keep=(), polarity=present)

        yield from _per_language(ctx, view, "classification", yesno)
    # "no finding" is a real answer where the source can say it: is anything abnormal here?
    if NO_FINDING in labels["vocabulary"] and (pos or neg):
        abnormal = bool(findings)

        def normal(lang):
            q = t.render(lang, "classification", "abnormal_q", rng, modality=_modality(ctx, lang, view))
            a = t.word(lang, "yes" if abnormal else "no")
            return Entry("classification", "yesno", lang, [(q, a)], source, keep=(), polarity=abnormal)

        yield from _per_language(ctx, view, "classification", normal)


def _sample(rng, items: list[str], k: int) -> list[str]:
    k = min(k, len(items))
    return rng.choice(items, size=k, replace=False).tolist() if k else []


def _modality(ctx: Context, lang: str, view: SampleView) -> str:
    try:
        return _say(ctx, lang, view.modality or "mixed")
    except MissingTerm:
        return _say(ctx, lang, "mixed")


def vqa(view: SampleView, ctx: Context, rng, labels) -> Iterator[Entry | Drop]:
    """The source's own question-answer pairs, verbatim and in their language; closed = yes/no answers."""
    for n in view.notes:
        if n["kind"] != "vqa":
            continue
        question = (n["text"] or "").strip()
        answer = str(json.loads(n["payload"] or "{}").get("answer") or "").strip()
        if not question or not answer:
            yield Drop("empty_answer", "VQA pair with an empty question or answer", n["source_id"])
            continue
        closed = re.sub(r"[\s.,!?。！？]+$", "", answer.lower()) in CLOSED_ANSWERS
        lang = n["language"] or "en"
        yield Entry(
            "vqa", "closed" if closed else "open", lang, [(question, answer)], n["source_id"], SOURCE, _origin(n)
        )


def grounding(view: SampleView, ctx: Context, rng, labels) -> Iterator[Entry | Drop]:
    """ "Where is X?" -> every box of X; "what is in [box]?" -> X, for up to ``max_regions`` boxes per label."""
    t = ctx.templates
    for label, (source, annotation_id, raw) in sorted(labels["boxes"].items()):
        boxes = []
        for box in raw:
            try:
                boxes.append(normalise(box, view.width, view.height))
            except BadBox as exc:
                yield Drop("box_outside_image", f"{label}: {exc}", source)
        boxes = sorted({tuple(b) for b in boxes})
        if not boxes:
            continue
        origin = {"annotation_ids": [annotation_id]}

        def where(lang, label=label, boxes=boxes, source=source, origin=origin):
            shown = _say(ctx, lang, label)
            q = t.render(lang, "grounding", "q", rng, label=shown)
            if len(boxes) == 1:
                a = t.render(lang, "grounding", "a_one", rng, label=shown, box=show(list(boxes[0])))
            else:
                listing = t.word(lang, "list_sep").join(show(list(b)) for b in boxes)
                a = t.render(lang, "grounding", "a_many", rng, label=shown, boxes=listing, n=len(boxes))
            keep = tuple(show(list(b)) for b in boxes)
            return Entry("grounding", "box", lang, [(q, a)], source, origin=origin, keep=keep)

        if "grounding" in ctx.tasks:
            yield from _per_language(ctx, view, "grounding", where)
        if "region" not in ctx.tasks:
            continue
        for box in boxes[: ctx.max_regions]:

            def region(lang, label=label, box=box, source=source, origin=origin):
                term = _say(ctx, lang, label)
                q = t.render(lang, "region", "q", rng, box=show(list(box)))
                a = t.render(lang, "region", "a", rng, label=term)
                facts = {"label": label, "term": term, "box": show(list(box))}
                return Entry("region", "box", lang, [(q, a)], source, origin=origin, keep=(term,), region=facts)

            yield from _per_language(ctx, view, "region", region)


def recognition(view: SampleView, ctx: Context, rng, labels) -> Iterator[Entry | Drop]:
    """Modality, anatomy and plane from the metadata every image has (where it says something)."""
    t = ctx.templates
    asks = []
    if view.modality not in UNSHOWN:
        asks.append(("modality", "modality", view.modality))
    if view.anatomy not in UNSHOWN:
        asks.append(("anatomy", "anatomy", view.anatomy))
    if view.plane in PLANES:
        asks.append(("plane", "plane", view.plane))
    for form, key, value in asks:

        def ask(lang, form=form, key=key, value=value):
            shown = _say(ctx, lang, value)
            q = t.render(lang, "recognition", f"{form}_q", rng)
            a = t.render(lang, "recognition", f"{form}_a", rng, **{key: shown})
            return Entry("recognition", form, lang, [(q, a)], view.source_id, keep=(shown,))

        yield from _per_language(ctx, view, "recognition", ask)


def _origin(note: dict) -> dict:
    return {"annotation_ids": [note["annotation_id"]]}


# Order of a sample's entries: what the image is, what it shows, then questions about it.
BUILDERS = [
    (("caption",), captions),
    (("report",), reports),
    (("recognition",), recognition),
    (("classification",), classification),
    (("vqa",), vqa),
    (("grounding", "region"), grounding),
]
