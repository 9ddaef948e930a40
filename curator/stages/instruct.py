"""Instruct: every kept sample's labels, boxes, reports, VQA pairs and captions become training entries.

Image-centric (IMAX): one pass over the samples in sample_id order, each with every
member's annotations, builds all of that image's entries together
(``curator.instruct.tasks``) from the versioned templates in ``prompts/instruct/``.
Each sample draws its choices from its own generator, seeded by the recipe's seed
and the sample_id, so the entries do not depend on batch sizes or on other samples.
Bad input (a box outside its image, an empty answer, a label the vocabulary does not
know) is counted per reason and never written. Rows stream into the
``instructions`` table a row group at a time; a marker with the input fingerprint
makes a re-run with unchanged inputs a no-op.

With ``[instruct.llm]`` in the recipe, optional LLM passes (``curator.instruct.llm_pass``)
rewrite template answers into fluent ones, describe boxed regions and translate a
seeded share of the English-only entries to Chinese, a chunk of samples at a time,
through the caption stage's endpoint settings and response cache; every entry records
its generator (template, source, llm, template-fallback), model, prompt and hash.

The stage runs in one process, outside the executor seam: it decodes no pixels, and
building entries costs about a millisecond per image (one core, templates only), so
a million images take minutes, dominated by the one streaming DuckDB scan. Should it
need more, units would be sample_id hash ranges, each writing its own part.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from curator import vocab
from curator.adapters.base import short_hash
from curator.config import CaptionSettings, InstructSettings
from curator.errors import CuratorError
from curator.instruct.llm_pass import InstructLLM, LLMPassResult
from curator.instruct.tasks import FAMILIES, SOURCE, Context, Drop, Entry, SampleView, build_entries
from curator.instruct.templates import InstructTemplates
from curator.storage import Corpus

log = logging.getLogger(__name__)
STAGE = "instruct"
BATCH_SAMPLES = 2048
# samples whose entries go to the LLM passes together: their distinct requests are in flight
# at the pace's limit, and only this chunk's rows are held in memory
LLM_CHUNK = 512
DROP_EXAMPLES = 20  # kept in the marker, so an auditor sees what a reason looks like

SAMPLES_SQL = """
WITH notes AS (
    SELECT mb.sample_id, a.source_id, a.kind, a.text, a.value, a.native, a.language, a.payload, a.boxes,
           min(a.annotation_id) AS annotation_id
    FROM members mb JOIN annotations a ON a.sample_id = mb.member_id
    GROUP BY ALL
)
SELECT s.sample_id, i.source_id, s.split, s.modality, s.anatomy, i.plane, i.width, i.height,
       list(struct_pack(annotation_id := n.annotation_id, source_id := n.source_id, kind := n.kind, text := n.text,
                        value := n.value, native := n.native, language := n.language, payload := n.payload,
                        boxes := n.boxes)
            ORDER BY n.kind, n.source_id, n.text, n.annotation_id) FILTER (WHERE n.kind IS NOT NULL) AS notes
FROM samples s
JOIN members c ON c.sample_id = s.sample_id AND c.canonical
JOIN images i ON i.sample_id = c.member_id
LEFT JOIN notes n ON n.sample_id = s.sample_id
WHERE s.status = 'keep'
GROUP BY ALL
ORDER BY s.sample_id
"""


@dataclass
class InstructResult:
    samples: int = 0
    with_entries: int = 0
    entries: int = 0
    by_task: Counter = field(default_factory=Counter)
    by_family: Counter = field(default_factory=Counter)
    by_language: Counter = field(default_factory=Counter)
    by_generator: Counter = field(default_factory=Counter)
    drops: Counter = field(default_factory=Counter)
    drop_examples: list[dict] = field(default_factory=list)
    stats: list[dict] = field(default_factory=list)  # curator.instruct.stats.task_stats
    mixtures: list[dict] = field(default_factory=list)  # curator.instruct.mixtures.mixture_table
    llm: LLMPassResult | None = None  # the LLM passes, when the recipe asks for them
    translated: int = 0
    skipped: bool = False

    def to_marker(self) -> dict:
        return {
            "samples": self.samples,
            "with_entries": self.with_entries,
            "entries": self.entries,
            "by_task": dict(self.by_task),
            "by_family": dict(self.by_family),
            "by_language": dict(self.by_language),
            "by_generator": dict(self.by_generator),
            "drops": dict(self.drops),
            "drop_examples": self.drop_examples,
            "translated": self.translated,
            "llm": self.llm.to_dict() if self.llm else None,
        }

    @classmethod
    def from_marker(cls, m: dict) -> InstructResult:
        counters = ("by_task", "by_family", "by_language", "by_generator", "drops")
        fields = {k: v for k, v in m.items() if k not in ("fingerprint", "mixtures", "llm")}
        llm = LLMPassResult.from_dict(m["llm"]) if m.get("llm") else None
        return cls(**{k: Counter(v) if k in counters else v for k, v in fields.items()}, llm=llm, skipped=True)


def known_labels(templates: InstructTemplates) -> set[str]:
    """The label vocabulary: every canonical name in curator.vocab, and every term the templates can show."""
    names = {v for _, _, table in vocab.DOMAINS for v in table.values()}
    names |= set(vocab.GENERAL.values()) | set(vocab.SYNONYMS.values())
    return names | templates.known()


def _context(con, settings: InstructSettings, templates: InstructTemplates) -> Context:
    vocabulary: dict[tuple, list[str]] = {}
    for source, modality, anatomy, labels in con.execute(
        """
        SELECT a.source_id, s.modality, s.anatomy, list(DISTINCT a.text ORDER BY a.text)
        FROM annotations a JOIN members mb ON mb.member_id = a.sample_id JOIN samples s ON s.sample_id = mb.sample_id
        WHERE a.kind = 'label' AND a.value IN ('positive', 'negative') AND a.text IS NOT NULL
        GROUP BY 1, 2, 3
        """
    ).fetchall():
        vocabulary[(source, modality, anatomy)] = labels
    captions: dict[str, dict[str, list[tuple]]] = defaultdict(lambda: defaultdict(list))
    for triplet, lang, index, text, generator, model in con.execute(
        "SELECT triplet_id, language, caption_index, caption, generator, model FROM captions "
        "WHERE validation = 'ok' ORDER BY 1, 2, 3"
    ).fetchall():
        captions[triplet][lang].append((index, text, generator, model))
    return Context(
        templates=templates,
        languages=list(settings.languages),
        tasks=set(settings.tasks),
        known_labels=known_labels(templates),
        vocabulary=vocabulary,
        captions=captions,
        max_options=settings.max_options,
        max_yesno=settings.max_yesno,
        max_regions=settings.max_regions,
    )


def sample_rng(seed: int, sample_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, int(short_hash(sample_id, n=16), 16)])


def _views(con) -> Iterator[SampleView]:
    for batch in con.sql(SAMPLES_SQL).to_arrow_reader(BATCH_SAMPLES):
        for r in batch.to_pylist():
            yield SampleView(
                r["sample_id"],
                r["source_id"],
                r["split"],
                r["modality"],
                r["anatomy"],
                r["plane"],
                r["width"],
                r["height"],
                r["notes"] or [],
            )


def entry_row(view: SampleView, entry: Entry, templates: InstructTemplates, index: int) -> dict:
    turns = []
    for question, answer in entry.turns:
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    templated = entry.generator != SOURCE
    return {
        "entry_id": short_hash(view.sample_id, entry.task, entry.form, entry.language, json.dumps(turns), n=20),
        "sample_id": view.sample_id,
        "entry_index": index,
        "source_id": entry.source_id,
        "split": view.split,
        "task": entry.task,
        "form": entry.form,
        "family": FAMILIES[entry.task],
        "language": entry.language,
        "turns": turns,
        "generator": entry.generator,
        "model": templates.model if templated else None,
        "prompt_id": templates.id if templated else None,
        "prompt_sha256": templates.sha256 if templated else None,
        "validation": "ok",
        "origin": json.dumps(entry.origin, sort_keys=True, ensure_ascii=False),
        "translated": False,
    }


def _fingerprint(corpus: Corpus, settings: InstructSettings, templates: InstructTemplates, llm: str) -> str:
    index = corpus.marker("index", "all") or {}
    caption = corpus.marker("caption", "all") or {}
    return short_hash(
        settings.model_dump_json(exclude={"mixtures"}),
        templates.sha256,
        index.get("fingerprint"),
        index.get("inputs"),
        caption.get("fingerprint"),
        llm,
        n=32,
    )


def run_instruct(
    corpus: Corpus,
    settings: InstructSettings,
    progress: bool = True,
    llm: CaptionSettings | None = None,
) -> InstructResult:
    """Write the instructions table (every kept sample's entries); skipped when nothing it reads changed.

    ``llm``: the endpoint settings (the recipe's [caption] table) the [instruct.llm]
    passes use; without it they use the defaults ($OPENAI_BASE_URL, $CURATOR_LLM_MODEL)."""
    from curator.instruct.mixtures import mixture_table
    from curator.instruct.stats import task_stats
    from curator.stages.index import require_current_index
    from curator.tables import connect

    require_current_index(corpus)
    templates = InstructTemplates.load(settings.templates)
    missing = [lang for lang in settings.languages if lang not in templates.languages]
    if missing:
        raise CuratorError(f"templates '{templates.id}' have no language(s) {', '.join(missing)}")
    passes = InstructLLM(corpus, settings.llm, llm or CaptionSettings(), templates, settings.seed)
    passes.start()
    try:
        fingerprint = _fingerprint(corpus, settings, templates, passes.fingerprint)
        marker = corpus.marker(STAGE, "all")
        if marker and marker.get("fingerprint") == fingerprint and corpus.table_parts("instructions"):
            result = InstructResult.from_marker(marker)
        else:
            corpus.clear_marker(STAGE, "all")
            result = _write(corpus, settings, templates, progress, passes)
    finally:
        passes.close()
    if not result.skipped:
        result.llm = passes.result if settings.llm.enabled else None
        if result.llm is None or not result.llm.failed:  # failed requests: the next run retries them
            corpus.set_marker(STAGE, "all", {"fingerprint": fingerprint, **result.to_marker()})
        else:
            log.warning("instruct: %d LLM requests failed for good; re-run to retry them", result.llm.failed)
    con = connect(corpus, ["samples", "members", "instructions"])
    result.stats = task_stats(con)
    result.mixtures = mixture_table(con, settings.mixtures)
    # mixtures do not change the entries (not in the fingerprint), but the report shows their shares
    marker = corpus.marker(STAGE, "all")
    if marker and marker.get("mixtures") != result.mixtures:
        corpus.set_marker(STAGE, "all", {**marker, "mixtures": result.mixtures})
    return result


def drop_instructions(corpus: Corpus) -> None:
    """Remove the instructions table and its marker (a recipe without [instruct]): shards then carry none."""
    corpus.remove_table_part("instructions", "all")
    corpus.clear_marker(STAGE, "all")


def _write(
    corpus: Corpus, settings: InstructSettings, templates: InstructTemplates, progress: bool, passes: InstructLLM
) -> InstructResult:
    from curator.tables import connect

    con = connect(corpus, ["samples", "members", "images", "annotations", "captions"])
    ctx = _context(con, settings, templates)
    total = con.execute("SELECT count(*) FROM samples WHERE status = 'keep'").fetchall()[0][0]
    result = InstructResult()
    for part in corpus.table_parts("instructions"):
        corpus.fs.rm(part)
    bar = tqdm(total=total, desc="instruct", unit="image", disable=None if progress else True, leave=False)
    chunk: list[tuple[SampleView, list[tuple[dict, Entry]]]] = []

    def flush(writer) -> None:
        for rows in passes.process(chunk):
            for index, row in enumerate(rows):
                row["entry_index"] = index
                writer.append(row)
                result.entries += 1
                result.translated += bool(row["translated"])
                result.by_task[row["task"]] += 1
                result.by_family[row["family"]] += 1
                result.by_language[row["language"]] += 1
                result.by_generator[row["generator"]] += 1
        bar.update(len(chunk))
        chunk.clear()

    with corpus.table_writer("instructions", "all") as writer:
        for view in _views(con):
            result.samples += 1
            seen: set[str] = set()
            pairs = []
            for item in build_entries(view, ctx, sample_rng(settings.seed, view.sample_id)):
                if isinstance(item, Drop):
                    _drop(result, view, item)
                    continue
                if not all(q.strip() and a.strip() for q, a in item.turns):
                    _drop(result, view, Drop("empty_answer", f"{item.task}/{item.form}: an empty turn", item.source_id))
                    continue
                row = entry_row(view, item, templates, len(seen))
                if row["entry_id"] in seen:  # the same pair twice (a source repeating a VQA row)
                    continue
                seen.add(row["entry_id"])
                pairs.append((row, item))
            result.with_entries += bool(seen)
            chunk.append((view, pairs))
            if len(chunk) >= (LLM_CHUNK if passes.active else BATCH_SAMPLES):
                flush(writer)
        flush(writer)
    bar.close()
    if result.drops:
        log.warning(
            "instruct: %d inputs dropped (%s)",
            sum(result.drops.values()),
            ", ".join(f"{k}={v}" for k, v in sorted(result.drops.items())),
        )
    return result


def _drop(result: InstructResult, view: SampleView, drop: Drop) -> None:
    result.drops[drop.reason] += 1
    log.debug("instruct drop %s %s: %s", view.sample_id, drop.reason, drop.message)
    if len(result.drop_examples) < DROP_EXAMPLES:
        result.drop_examples.append(
            {"sample_id": view.sample_id, "source_id": drop.source_id, "reason": drop.reason, "message": drop.message}
        )


ENTRY_COLUMNS = (
    "entry_id, entry_index, task, form, family, language, turns, generator, model, prompt_id, prompt_sha256, origin"
)


def sample_entries(corpus: Corpus, sample_id: str) -> list[dict]:
    """One sample's entries, in the order the stage wrote them (for trace, or a single shard sample)."""
    from curator.tables import connect, rows

    con = connect(corpus, ["instructions"])
    return rows(con, f"SELECT {ENTRY_COLUMNS} FROM instructions WHERE sample_id = ? ORDER BY entry_index", [sample_id])


def entries_by_sample(corpus: Corpus, split: str | None = None) -> Iterator[tuple[str, list[dict]]]:
    """(sample_id, its entries) for every sample with entries, in sample_id order, streamed in batches.

    What the shard stage puts in each sample's ``.json`` as ``conversations``: walk it
    beside the stage's own sample_id-ordered stream, e.g.::

        weights = family_weights(family_counts(con, splits, source_weights), mixture.shares)
        for sample_id, entries in entries_by_sample(corpus, split):
            entries = select_entries(entries, weights, seed, mixture_name, sample_id)  # named mixtures only
            record["conversations"] = entries

    (``curator.instruct.mixtures``). Each entry carries ``turns`` without the image
    placeholder; ``curator.exports.llava.conversation`` adds it where a loader wants it.
    """
    from curator.tables import connect, stream

    con = connect(corpus, ["instructions"])
    where = "WHERE split = " + "'" + split.replace("'", "''") + "'" if split else ""
    current, group = None, []
    for row in stream(
        con, f"SELECT sample_id, {ENTRY_COLUMNS} FROM instructions {where} ORDER BY sample_id, entry_index"
    ):
        sid = row.pop("sample_id")
        if sid != current and group:
            yield current, group
            group = []
        current = sid
        group.append(row)
    if group:
        yield current, group
