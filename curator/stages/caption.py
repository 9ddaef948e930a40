"""Caption: label-only images get captions per unique (label, anatomy, modality) triplet and language.

Never per image: a million CheXpert images share a few thousand triplets. A
sample is label-only when no source text (caption, report) describes it; its
triplet's label is the sorted set of its positive findings, or none (the
unlabelled templates describe modality and anatomy only).

Two generators. With an OpenAI-compatible endpoint configured (``OPENAI_BASE_URL``
or ``caption.base_url``) an LLM writes the captions (``generator=llm``): one job per
triplet and language, bounded concurrency, every answer cached in the corpus as it
arrives (``curator.llm.cache``), so a re-run makes no call and a killed run resumes.
Without one, the offline templates write them (``generator=template``); they also
stand in for any triplet the LLM could not caption (``fallback``). Every row, good
or bad, lands in the captions table with its validation verdict; shards ship only
``ok`` rows.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field

from tqdm import tqdm

from curator.adapters.base import short_hash
from curator.config import CaptionSettings
from curator.errors import CuratorError
from curator.llm.cache import ResponseCache, cache_key
from curator.llm.captioner import GENERATOR as LLM
from curator.llm.captioner import Job, assemble, run_job
from curator.llm.client import ChatClient, Endpoint, RequestFailed, resolve_endpoint, run_all
from curator.llm.diversity import measure
from curator.llm.offline import GENERATOR as TEMPLATE
from curator.llm.offline import TemplateGenerator, Triplet, _translate
from curator.llm.prompts import CaptionPrompt, load_prompt
from curator.llm.validate import CaptionValidator, Rules
from curator.schema import TEXT_KINDS
from curator.storage import Corpus

log = logging.getLogger(__name__)
# Rough completion tokens per caption for the dry-run estimate (two-sentence captions, JSON quoting).
EST_TOKENS_PER_CAPTION = {"en": 30, "zh": 45}


@dataclass
class CaptionResult:
    triplets: int = 0
    captions: int = 0
    by_generator: Counter = field(default_factory=Counter)
    by_validation: Counter = field(default_factory=Counter)
    skipped: bool = False
    generator: str = TEMPLATE
    model: str | None = None
    endpoint: str | None = None
    jobs: int = 0
    cached_jobs: int = 0
    failed_jobs: int = 0
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    pace: object | None = None  # curator.llm.pace.PaceStats: what pace the endpoint sustained
    response_format: str | None = None  # the structured-output mode the endpoint took
    fallback_jobs: int = 0  # triplet-languages the offline generator completed for the LLM
    diversity: list[dict] = field(default_factory=list)  # curator.llm.diversity.measure of the ok captions


# One row per label-only sample the corpus may caption: its (label, anatomy, modality)
# triplet and the triplet's id, computed in SQL so no stage holds every sample in Python.
# A merged sample pools its members' annotations: it is label-only when no member from
# any source carries text, and its label is the sorted union of every member's positive
# findings. "No finding" beside a positive finding is a labelling inconsistency (CheXpert
# has them); the finding is the informative part, so "no finding" is dropped. The id is
# curator.llm.offline.Triplet.id: sha256 of label, anatomy, modality joined by NUL.
TRIPLETS_SQL = f"""
CREATE OR REPLACE TEMP VIEW sample_triplets AS
WITH pooled AS (
    SELECT s.sample_id, any_value(s.modality) AS modality, any_value(s.anatomy) AS anatomy,
           bool_or(coalesce(a.kind IN {TEXT_KINDS}, false)) AS has_text,
           list(DISTINCT a.text ORDER BY a.text) FILTER (WHERE a.kind = 'label' AND a.value = 'positive') AS pos
    FROM samples s
    JOIN members mb ON mb.sample_id = s.sample_id
    LEFT JOIN annotations a ON a.sample_id = mb.member_id
    WHERE s.status <> 'held_out' AND s.status <> 'near_duplicate'
    GROUP BY s.sample_id
), labelled AS (
    SELECT sample_id,
           nullif(array_to_string(CASE WHEN len(pos) > 1 AND list_contains(pos, 'no finding')
                                       THEN list_filter(pos, lambda x: x <> 'no finding') ELSE coalesce(pos, []) END,
                                  ', '), '') AS label,
           coalesce(nullif(anatomy, ''), 'unspecified') AS anatomy,
           coalesce(nullif(modality, ''), 'mixed') AS modality
    FROM pooled WHERE NOT has_text
)
SELECT sample_id, label, anatomy, modality,
       substr(sha256(coalesce(label, '') || chr(0) || anatomy || chr(0) || modality), 1, 16) AS triplet_id
FROM labelled
"""


def triplet_connection(corpus: Corpus):
    """A DuckDB connection over the index with the ``sample_triplets`` view (requires a current index)."""
    from curator.stages.index import require_current_index
    from curator.tables import connect

    require_current_index(corpus)
    con = connect(corpus, ["samples", "members", "annotations", "captions"])
    con.execute(TRIPLETS_SQL)
    return con


def triplet_images(corpus: Corpus) -> Counter:
    """Label-only images per triplet: the caption plan's input, one row per triplet (never per sample)."""
    con = triplet_connection(corpus)
    rows = con.execute(
        "SELECT label, anatomy, modality, count(*) FROM sample_triplets GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    return Counter({Triplet(label, anatomy, modality): n for label, anatomy, modality, n in rows})


def sample_triplets(corpus: Corpus) -> dict[str, Triplet]:
    """The triplet of every label-only sample, keyed by sample_id: for tests and audits of small corpora.

    The stages never call this (it holds every sample): they join ``sample_triplets`` in SQL.
    """
    con = triplet_connection(corpus)
    rows = con.execute("SELECT sample_id, label, anatomy, modality FROM sample_triplets ORDER BY sample_id")
    return {sid: Triplet(label, anatomy, modality) for sid, label, anatomy, modality in rows.fetchall()}


@dataclass
class CaptionPlan:
    """What a caption run will do, known before any call: printed, and the whole of ``--dry-run``."""

    generator: str
    triplets: list[Triplet]
    images: Counter  # label-only images per triplet
    languages: list[str]
    jobs: list[Job]
    endpoint: Endpoint | None
    model: str | None
    cached: int | None  # None: unknown until the model is known
    prompt: CaptionPrompt | None
    templates: TemplateGenerator
    est_prompt_tokens: int = 0
    est_completion_tokens: int = 0
    est_cost: float | None = None

    @property
    def planned(self) -> int:
        return len(self.triplets) * len(self.languages)

    @property
    def to_call(self) -> int | None:
        if self.generator != LLM:
            return 0
        return None if self.cached is None else len(self.jobs) - self.cached


def estimate_tokens(text: str) -> int:
    """About four characters per token for Latin script, one per CJK character."""
    ascii_chars = sum(1 for ch in text if ord(ch) < 128)
    return (ascii_chars + 3) // 4 + (len(text) - ascii_chars)


def plan_captions(corpus: Corpus, settings: CaptionSettings, resolve_model: bool = True) -> CaptionPlan:
    """Triplets, jobs, cache hits and token estimates; contacts the endpoint only to learn an unset model."""
    images = triplet_images(corpus)
    triplets = sorted(images, key=lambda t: t.id)
    templates = TemplateGenerator(load_prompt(settings.templates), seed=settings.seed)
    endpoint = resolve_endpoint(settings)
    if endpoint is None or settings.fallback == "template":
        unknown = [lang for lang in settings.languages if lang not in templates.languages()]
        if unknown:
            raise CuratorError(
                f"no offline templates for language(s) {', '.join(unknown)} in {settings.templates}"
                + (" (set caption.fallback = 'none' to go without)" if endpoint else "")
            )
    if endpoint is None:
        return CaptionPlan(
            TEMPLATE, triplets, images, settings.languages, [], None, templates.model, 0, None, templates
        )

    prompt = CaptionPrompt(load_prompt(settings.prompt))
    missing = [lang for lang in settings.languages if lang not in prompt.languages()]
    if missing:
        raise CuratorError(f"prompt '{prompt.id}' has no language(s) {', '.join(missing)}")
    model = endpoint.model
    if model is None and resolve_model:
        model = _run(_resolve_model(endpoint, settings))
    params = {
        "n": settings.captions_per_triplet,
        "temperature": settings.temperature,
        "response_format": settings.response_format,
    }
    jobs = []
    est_prompt = est_completion = 0
    for t in triplets:
        for lang in settings.languages:
            terms = templates.terms(lang)
            hint = _translate(t.label, terms, lang) if t.label and lang != "en" else ""
            messages = prompt.messages(
                t.label, t.anatomy, t.modality, lang, settings.captions_per_triplet, hint if hint != t.label else ""
            )
            key = cache_key(messages, model or "", params)
            args = {"label": t.label, "anatomy": t.anatomy, "modality": t.modality, "language": lang}
            jobs.append(Job(t, lang, messages, key, {**args, "local_terms": terms}))
            est_prompt += sum(estimate_tokens(m["content"]) for m in messages)
            est_completion += 10 + settings.captions_per_triplet * EST_TOKENS_PER_CAPTION.get(lang, 40)
    cache = ResponseCache(corpus)  # one listing of the cache, not one per job
    cached = sum(1 for j in jobs if j.key in cache) if model else None
    plan = CaptionPlan(LLM, triplets, images, settings.languages, jobs, endpoint, model, cached, prompt, templates)
    share = 1.0 if cached is None or not jobs else (len(jobs) - cached) / len(jobs)
    plan.est_prompt_tokens, plan.est_completion_tokens = int(est_prompt * share), int(est_completion * share)
    if settings.price_input_per_million is not None or settings.price_output_per_million is not None:
        plan.est_cost = (
            plan.est_prompt_tokens * (settings.price_input_per_million or 0)
            + plan.est_completion_tokens * (settings.price_output_per_million or 0)
        ) / 1e6
    return plan


def _run(coro):
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise CuratorError("the caption stage runs its own event loop: call it outside a running one")


async def _resolve_model(endpoint: Endpoint, settings: CaptionSettings) -> str:
    client = ChatClient(endpoint, settings)
    try:
        return await client.resolve_model()
    finally:
        await client.close()


def run_caption(
    corpus: Corpus, settings: CaptionSettings, progress: bool = True, plan: CaptionPlan | None = None
) -> CaptionResult:
    """Caption every label-only triplet in every language; write the captions table.

    A caller that printed ``plan`` itself passes it in; otherwise the plan is logged here.
    """
    announced = plan is not None
    plan = plan or plan_captions(corpus, settings)
    if plan.generator == LLM and plan.model is None:
        plan = plan_captions(corpus, settings)
    log.log(
        logging.INFO if announced or not plan.to_call else logging.WARNING,
        "caption: %d unique triplets x %d languages = %d %s calls planned (%d cached, %d to call)",
        len(plan.triplets),
        len(plan.languages),
        plan.planned,
        plan.generator,
        plan.cached or 0,
        plan.to_call or 0,
    )
    fingerprint = short_hash(
        settings.model_dump_json(),
        plan.generator,
        plan.model,
        plan.templates.prompt.sha256,
        plan.prompt.sha256 if plan.prompt else "",
        *[t.id for t in plan.triplets],
        n=32,
    )
    marker = corpus.marker("caption", "all")
    if (
        marker
        and marker["fingerprint"] == fingerprint
        and corpus.table_parts("captions")
        and corpus.table_parts("sample_captions")
    ):
        result = CaptionResult(
            marker["triplets"],
            marker["captions"],
            Counter(marker["by_generator"]),
            Counter(marker["by_validation"]),
            skipped=True,
            generator=plan.generator,
            model=plan.model,
            endpoint=plan.endpoint.host if plan.endpoint else None,
            jobs=len(plan.jobs),
            cached_jobs=len(plan.jobs),
        )
        ok = corpus.read_table("captions").to_pylist()
        result.diversity = measure(r for r in ok if r["validation"] == "ok")
        return result
    corpus.clear_marker("caption", "all")
    result = CaptionResult(
        triplets=len(plan.triplets),
        generator=plan.generator,
        model=plan.model,
        endpoint=plan.endpoint.host if plan.endpoint else None,
        jobs=len(plan.jobs),
        cached_jobs=plan.cached or 0,
    )
    entries: dict[str, dict] = {}
    failures: dict[str, str] = {}
    if plan.generator == LLM:
        cache = ResponseCache(corpus)
        _run(_call_all(plan, cache, settings, result, entries, failures, progress))
        rows = _llm_rows(plan, cache, settings, entries, failures)
    else:
        rows = _template_rows(plan, settings, [(t, lang, 0) for t in plan.triplets for lang in plan.languages])
    result.failed_jobs = len(failures)
    result.fallback_jobs = len({(r["triplet_id"], r["language"]) for r in rows if r["generator"] == TEMPLATE}) * (
        plan.generator == LLM
    )
    result.diversity = measure(r for r in rows if r["validation"] == "ok")
    for row in rows:
        result.by_validation[row["validation"]] += 1
        if row["validation"] == "ok":
            result.captions += 1
            result.by_generator[row["generator"]] += 1
    for part in corpus.table_parts("captions"):
        corpus.fs.rm(part)
    corpus.write_table("captions", "all", rows)
    _write_sample_captions(corpus)
    if failures:
        log.warning(
            "caption: %d of %d jobs failed (%s); re-run to retry them (answers so far are cached)",
            len(failures),
            len(plan.jobs),
            ", ".join(f"{k}={v}" for k, v in sorted(Counter(failures.values()).items())),
        )
    else:
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


def _write_sample_captions(corpus: Corpus) -> None:
    """The ``sample_captions`` table: each label-only sample x each validated caption of its triplet, in SQL."""
    from curator.tables import write_table_part

    con = triplet_connection(corpus)
    sql = """
        SELECT st.sample_id, st.triplet_id, c.language, c.caption_index
        FROM sample_triplets st JOIN captions c ON c.triplet_id = st.triplet_id AND c.validation = 'ok'
        ORDER BY st.sample_id, c.language, c.caption_index
    """
    for part in corpus.table_parts("sample_captions"):
        corpus.fs.rm(part)
    write_table_part(corpus, "sample_captions", "all", con.sql(sql).to_arrow_reader(65_536))


async def _call_all(
    plan: CaptionPlan,
    cache: ResponseCache,
    settings: CaptionSettings,
    result: CaptionResult,
    entries: dict[str, dict],
    failures: dict[str, str],
    progress: bool,
) -> None:
    """Run every uncached job with at most ``concurrency`` in flight; cache each answer as it lands."""
    todo = [job for job in plan.jobs if job.key not in cache]
    client = ChatClient(plan.endpoint, settings)
    client.endpoint.model = plan.model
    bar = tqdm(total=len(todo), desc="caption", unit="job", disable=None if progress else True, leave=False)

    def show() -> None:
        p, u = client.pace, client.usage
        bar.set_postfix_str(
            f"{u.requests} requests, {p.in_flight} in flight (pace {int(p.limit)}/{p.ceiling}), "
            f"{len(failures)} failed, {u.total_tokens:,} tokens",
            refresh=False,
        )

    async def one(job: Job) -> None:
        try:
            attempts = await run_job(job, client, settings)
        except RequestFailed as exc:
            failures[job.key] = exc.reason
            # one line per failed job, except past a cap, where the summary line says it once
            level = logging.DEBUG if exc.reason.startswith("cap_reached") else logging.WARNING
            log.log(level, "caption %s/%s failed: %s", job.triplet.id, job.language, exc)
            return
        finally:
            show()
            bar.update()
        t = job.triplet
        entry = {
            "triplet": {"triplet_id": t.id, "label": t.label, "anatomy": t.anatomy, "modality": t.modality},
            "language": job.language,
            "model": plan.model,
            "prompt_id": plan.prompt.id,
            "prompt_sha256": plan.prompt.sha256,
            "params": {"n": settings.captions_per_triplet, "temperature": settings.temperature},
            "messages": job.messages,
            "attempts": attempts,
        }
        entries[job.key] = entry
        await asyncio.to_thread(cache.put, job.key, entry)

    try:
        if todo:
            await client.check_model()  # a model the endpoint does not serve: one line, no call made
        await run_all(one(job) for job in todo)
    finally:
        bar.close()
        await client.close()
        u = client.usage
        result.requests, result.retries = u.requests, u.retries
        result.prompt_tokens, result.completion_tokens = u.prompt_tokens, u.completion_tokens
        result.cost = u.cost(settings)
        result.pace = client.pace.stats if u.requests else None
        result.response_format = client.format


def _row(t: Triplet, lang: str, i: int, text: str, generator: str, model: str, prompt_id: str, sha: str, verdict: str):
    return {
        "triplet_id": t.id,
        "label": t.label,
        "anatomy": t.anatomy,
        "modality": t.modality,
        "language": lang,
        "caption_index": i,
        "caption": text,
        "generator": generator,
        "model": model,
        "prompt_id": prompt_id,
        "prompt_sha256": sha,
        "validation": verdict,
    }


def _llm_rows(
    plan: CaptionPlan, cache: ResponseCache, settings: CaptionSettings, entries: dict, failures: dict
) -> list[dict]:
    rows, fallback = [], []
    rules = Rules(settings.min_chars, settings.max_chars)
    for job in plan.jobs:
        t, lang = job.triplet, job.language
        entry = entries.get(job.key) or cache.get(job.key)
        if entry is None:
            ok, rejected = [], [("", failures.get(job.key, "not_run"))]
            model, prompt_id, sha = plan.model, plan.prompt.id, plan.prompt.sha256
        else:
            validator = CaptionValidator(**job.validator_args, rules=rules)
            ok, rejected = assemble(entry["attempts"], settings.captions_per_triplet, validator)
            model, prompt_id, sha = entry["model"], entry["prompt_id"], entry["prompt_sha256"]
        done = [(c, "ok") for c in ok] + rejected
        for i, (text, verdict) in enumerate(done):
            rows.append(_row(t, lang, i, text, LLM, model, prompt_id, sha, verdict))
        if len(ok) < settings.captions_per_triplet and settings.fallback == "template":
            fallback.append((t, lang, len(done), settings.captions_per_triplet - len(ok)))
    if fallback:
        log.warning(
            "caption: %d triplet-languages short of usable LLM captions are completed by the offline generator "
            "(generator=template)",
            len(fallback),
        )
        rows += _template_rows(plan, settings, fallback)
    return rows


def _template_rows(plan: CaptionPlan, settings: CaptionSettings, todo: list[tuple]) -> list[dict]:
    """Offline captions for (triplet, language, first caption_index[, how many]): a fallback continues
    the LLM's rows with only as many captions as the LLM left missing."""
    gen = plan.templates
    terms_of = {lang: gen.terms(lang) for lang in plan.languages}
    rules = Rules(settings.min_chars, settings.max_chars)
    rows = []
    for t, lang, start, *count in todo:
        validator = CaptionValidator(t.label, t.anatomy, t.modality, lang, terms_of[lang], rules)
        for i, text in enumerate(gen.captions(t, lang, count[0] if count else settings.captions_per_triplet)):
            rows.append(
                _row(
                    t,
                    lang,
                    start + i,
                    text,
                    TEMPLATE,
                    gen.model,
                    gen.prompt.id,
                    gen.prompt.sha256,
                    validator.check(text),
                )
            )
    for lang, labels in sorted(gen.missing.items()):
        log.warning(
            "caption: no %s name for label(s) %s in curator/vocab.py ZH_NAMES: their triplets get no %s "
            "template captions (add the names to caption them)",
            lang,
            ", ".join(f"'{x}'" for x in sorted(labels)),
            lang,
        )
    return rows
