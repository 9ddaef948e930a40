"""The LLM-scored audit: a seeded sample of texts per source, scored against their images' metadata.

GMAI-VL scored 30 samples per dataset with an LLM. ``curator audit --per-source 30``
takes, per source, the texts a model would be trained on: the instruction entries
(question and answer) when the corpus has an ``instructions`` table, else its captions
(the sources' captions and reports, and the generated captions label-only samples
carry). A hash of (seed, text id) orders each source's texts, so the sample is the same
on every run and a larger ``--per-source`` only adds to it. The LLM scores each text
from 1 to 5 on the rubric in ``prompts/audit/<v>.toml`` against the sample's positive
labels, modality and anatomy (it does not see the image: the metadata is the ground
truth), with a one-sentence reason.

Every answer is cached in the corpus as it lands (``curator.llm.cache``), so a killed
run resumes and a re-run with the same sample calls nothing. A reply that is not a valid
score is re-asked, then kept as a row with no score and its reason in ``status``. The
rows go to the ``audit_scores`` table; :func:`report_section` renders them for the
corpus card, :func:`format_summary` for the terminal.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
from dataclasses import dataclass, field

import pyarrow as pa
from pydantic import BaseModel, ConfigDict
from tqdm import tqdm

from curator.config import AuditSettings, CaptionSettings
from curator.errors import CorpusError, CuratorError
from curator.llm import answers
from curator.llm.cache import ResponseCache, cache_key
from curator.llm.client import ChatClient, LLMError, RequestFailed, resolve_endpoint, run_all
from curator.llm.prompts import load_prompt
from curator.llm.structured import ask, settle
from curator.schema import TABLES
from curator.storage import Corpus
from curator.tables import write_table_part

log = logging.getLogger(__name__)
TABLE = "audit_scores"
SIZE = 201  # the pace's size class of score requests
TEXT_CHARS = 2000  # of a text sent to the judge (a long report is judged on its start)
WORST = 10  # examples in the report and the summary

_LABELS = """
    SELECT mb.sample_id, string_agg(DISTINCT a.text, ', ' ORDER BY a.text) AS labels
    FROM members mb JOIN annotations a ON a.sample_id = mb.member_id
    WHERE a.kind = 'label' AND a.value = 'positive' AND a.text IS NOT NULL
    GROUP BY 1
"""
# the seeded pick per source, over a ``texts`` CTE: ranked by sha256(seed || text id), the first N kept
_SAMPLED = """, ranked AS (
    SELECT *, row_number() OVER (PARTITION BY source_id ORDER BY sha256(? || text_id), text_id) AS rank FROM texts
)
SELECT r.text_id, r.sample_id, r.source_id, r.kind, r.language, r.body, coalesce(l.labels, 'none') AS labels,
       coalesce(s.modality, 'mixed') AS modality, coalesce(s.anatomy, 'unspecified') AS anatomy
FROM ranked r JOIN samples s ON s.sample_id = r.sample_id LEFT JOIN labels l ON l.sample_id = r.sample_id
WHERE r.rank <= ? ORDER BY r.source_id, r.rank
"""
ENTRIES_SQL = f"""
WITH labels AS ({_LABELS}), texts AS (
    SELECT i.entry_id AS text_id, i.sample_id, i.source_id, i.task AS kind, i.language,
           to_json(i.turns)::VARCHAR AS body
    FROM instructions i JOIN samples s ON s.sample_id = i.sample_id WHERE s.status = 'keep'
){_SAMPLED}"""
CAPTIONS_SQL = f"""
WITH labels AS ({_LABELS}), texts AS (
    SELECT a.annotation_id AS text_id, mb.sample_id, a.source_id, a.kind, coalesce(a.language, 'en') AS language,
           a.text AS body
    FROM annotations a JOIN members mb ON mb.member_id = a.sample_id JOIN samples s ON s.sample_id = mb.sample_id
    WHERE a.kind IN ('caption', 'report') AND s.status = 'keep' AND coalesce(a.text, '') <> ''
    UNION ALL
    SELECT sc.sample_id || ':' || c.triplet_id || ':' || c.language || ':' || c.caption_index, sc.sample_id,
           cm.source_id, 'generated caption', c.language, c.caption
    FROM sample_captions sc
    JOIN captions c ON c.triplet_id = sc.triplet_id AND c.language = sc.language
                   AND c.caption_index = sc.caption_index AND c.validation = 'ok'
    JOIN members cm ON cm.sample_id = sc.sample_id AND cm.canonical
){_SAMPLED}"""


class Score(BaseModel):
    model_config = ConfigDict(extra="forbid")
    score: int
    reason: str


@dataclass
class AuditResult:
    rows: list[dict] = field(default_factory=list)
    texts: str = "instructions"  # what was sampled: instructions or captions
    model: str | None = None
    endpoint: str | None = None
    prompt_id: str = ""
    prompt_sha256: str = ""
    jobs: int = 0
    cached: int = 0
    requests: int = 0
    retries: int = 0
    failed: int = 0
    tokens: int = 0


def _text(kind_source: str, body: str) -> str:
    """The text shown to the judge: an entry's turns as Q/A lines, or a caption as it is."""
    if kind_source != "instructions":
        return body
    turns = json.loads(body)
    return "\n".join(f"{'Q' if t['from'] == 'human' else 'A'}: {t['value']}" for t in turns)


def sample_texts(corpus: Corpus, per_source: int, seed: int) -> tuple[str, list[dict]]:
    """(what was sampled, the sampled texts with their metadata), ``per_source`` per source, seeded."""
    from curator.tables import connect, rows

    if not corpus.table_parts("samples"):
        raise CorpusError(f"{corpus.url} has no index: run `curator build` (or ingest and index) first")
    con = connect(corpus, ["samples", "members", "annotations", "instructions", "captions", "sample_captions"])
    kind = "instructions" if corpus.table_parts("instructions") else "captions"
    sql = ENTRIES_SQL if kind == "instructions" else CAPTIONS_SQL
    found = rows(con, sql, [str(seed), per_source])
    for r in found:
        r["text"] = _text(kind, r.pop("body"))
    return kind, found


def _check(low: int, high: int):
    def check(value: Score) -> str:
        return answers.check_score(value.score, value.reason, low, high)

    return check


def run_audit(corpus: Corpus, settings: AuditSettings, llm: CaptionSettings, progress: bool = True) -> AuditResult:
    """Score ``settings.per_source`` texts per source with the LLM; write the audit_scores table."""
    endpoint = resolve_endpoint(llm.model_copy(update={"generator": "auto"}))
    if endpoint is None:
        raise LLMError("curator audit needs an LLM endpoint: set OPENAI_BASE_URL or the recipe's caption.base_url")
    prompt = load_prompt(settings.prompt)
    missing = [k for k in ("system", "user") if not isinstance(prompt.data.get(k), str)]
    if missing:
        raise CuratorError(f"prompt '{prompt.id}' lacks {', '.join(missing)}")
    low, high = prompt.data.get("scale", [1, 5])
    kind, texts = sample_texts(corpus, settings.per_source, settings.seed)
    result = AuditResult(texts=kind, endpoint=endpoint.host, prompt_id=prompt.id, prompt_sha256=prompt.sha256)
    client_settings = llm.model_copy(update={"temperature": settings.temperature, "max_tokens": settings.max_tokens})
    asyncio.run(_score(corpus, settings, client_settings, endpoint, prompt, texts, result, (low, high), progress))
    for part in corpus.table_parts(TABLE):
        corpus.fs.rm(part)
    write_table_part(corpus, TABLE, "all", pa.Table.from_pylist(result.rows, schema=TABLES[TABLE]).to_batches())
    return result


def _messages(prompt, t: dict) -> list[dict]:
    values = {
        "text": json.dumps(t["text"][:TEXT_CHARS], ensure_ascii=False),
        "labels": t["labels"],
        "modality": t["modality"],
        "anatomy": t["anatomy"],
        "language": t["language"],
        "task": t["kind"],
    }
    try:
        return [
            {"role": "system", "content": prompt.data["system"].strip().format(**values)},
            {"role": "user", "content": prompt.data["user"].strip().format(**values)},
        ]
    except (KeyError, IndexError) as exc:
        raise CuratorError(f"prompt '{prompt.id}' uses an unknown placeholder: {exc}") from None


async def _score(corpus, settings, client_settings, endpoint, prompt, texts, result, scale, progress) -> None:
    client = ChatClient(endpoint, client_settings)
    cache = ResponseCache(corpus)
    check = _check(*scale)
    try:
        result.model = await client.resolve_model()
        await client.check_model()
        params = {"pass": "audit", "temperature": settings.temperature, "format": "structured"}
        jobs = [(t, _messages(prompt, t)) for t in texts]
        keyed = [(t, m, cache_key(m, result.model, params)) for t, m in jobs]
        todo = {k: m for _, m, k in keyed if k not in cache}
        result.jobs, result.cached = len({k for *_, k in keyed}), len({k for *_, k in keyed}) - len(todo)
        fresh: dict[str, dict] = {}
        failures: dict[str, str] = {}
        bar = tqdm(total=len(todo), desc="audit", unit="text", disable=None if progress else True, leave=False)

        async def one(key: str, messages: list[dict]) -> None:
            try:
                attempts = await ask(
                    client, messages, Score, check, regenerations=settings.max_regenerations,
                    max_tokens=settings.max_tokens, size=SIZE, name="score", reasons=answers.REASONS,
                )  # fmt: skip
            except RequestFailed as exc:
                failures[key] = exc.reason
                log.warning("audit request failed: %s", exc)
                return
            finally:
                bar.update()
            entry = {
                "pass": "audit",
                "model": result.model,
                "prompt_id": prompt.id,
                "prompt_sha256": prompt.sha256,
                "messages": messages,
                "attempts": attempts,
            }
            fresh[key] = entry
            await asyncio.to_thread(cache.put, key, entry)

        try:
            await run_all(one(key, messages) for key, messages in todo.items())
        finally:
            bar.close()
    finally:
        await client.close()
        u = client.usage
        result.requests, result.retries, result.tokens = u.requests, u.retries, u.total_tokens
    for t, _, key in keyed:
        entry = fresh.get(key) or cache.get(key)
        value, status = (
            (None, failures.get(key, "not_run")) if entry is None else settle(entry["attempts"], Score, check)
        )
        result.failed += value is None
        result.rows.append(
            {
                **{k: t[k] for k in ("text_id", "sample_id", "source_id", "kind", "language", "text", "labels")},
                "modality": t["modality"],
                "anatomy": t["anatomy"],
                "score": value.score if value else None,
                "reason": value.reason.strip() if value else None,
                "status": status,
                "model": result.model,
                "prompt_id": prompt.id,
                "prompt_sha256": prompt.sha256,
                "seed": settings.seed,
            }
        )


# -- reading the table -----------------------------------------------------------------------
PER_SOURCE_SQL = """
SELECT source_id, count(*) AS texts, count(score) AS scored, round(avg(score), 2) AS mean, min(score) AS worst,
       count(*) FILTER (WHERE score <= 2) AS low, any_value(model) AS model,
       any_value(prompt_id) AS prompt_id, any_value(prompt_sha256) AS prompt_sha256
FROM audit_scores GROUP BY 1 ORDER BY mean NULLS FIRST, source_id
"""
WORST_SQL = f"""
SELECT source_id, sample_id, kind, language, score, reason, text FROM audit_scores
WHERE score IS NOT NULL ORDER BY score, source_id, text_id LIMIT {WORST}
"""


def _table_rows(con, sql: str) -> list[dict] | None:
    import duckdb

    from curator.tables import rows

    try:
        return rows(con, sql)
    except duckdb.Error:
        return None  # no audit_scores view on this connection


def per_source(con) -> list[dict]:
    return _table_rows(con, PER_SOURCE_SQL) or []


def worst(con) -> list[dict]:
    return _table_rows(con, WORST_SQL) or []


def _mean(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _cut(text: str, n: int = 240) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def report_section(con) -> str:
    """An HTML fragment for the corpus card: scores per source and the worst examples; "" without scores."""
    sources = per_source(con)
    if not sources:
        return ""
    e = html.escape
    first = sources[0]
    head = "<tr><th>source</th><th>texts</th><th>scored</th><th>mean (1-5)</th><th>worst</th><th>score &le; 2</th></tr>"
    body = "".join(
        f"<tr><td>{e(r['source_id'])}</td><td>{r['texts']}</td><td>{r['scored']}</td>"
        f"<td>{_mean(r['mean'])}</td>"
        f"<td>{'' if r['worst'] is None else r['worst']}</td><td>{r['low']}</td></tr>"
        for r in sources
    )
    examples = "".join(
        f"<tr><td>{r['score']}</td><td>{e(r['source_id'])}</td><td>{e(r['kind'])}</td><td>{e(r['language'])}</td>"
        f"<td>{e(_cut(r['text']))}</td><td>{e(r['reason'] or '')}</td></tr>"
        for r in worst(con)
    )
    return (
        '<section id="audit-scores">\n<h2>LLM-scored audit</h2>\n'
        f"<p>Sampled texts per source scored 1-5 against each image's labels, modality and anatomy by "
        f"{e(first['model'] or '?')} on the rubric {e(first['prompt_id'])} "
        f"(sha256 {e((first['prompt_sha256'] or '')[:12])}).</p>\n"
        f"<table>\n{head}\n{body}\n</table>\n"
        "<h3>Worst examples</h3>\n<table>\n"
        "<tr><th>score</th><th>source</th><th>kind</th><th>language</th><th>text</th><th>reason</th></tr>\n"
        f"{examples}\n</table>\n</section>\n"
    )


def format_summary(result: AuditResult, con) -> str:
    """The terminal summary of a run: what was asked, scores per source, the worst examples."""
    lines = [
        f"audit: {len(result.rows)} {result.texts} texts scored by {result.model} at {result.endpoint} "
        f"({result.prompt_id} {result.prompt_sha256[:12]})",
        f"  {result.jobs} distinct requests ({result.cached} cached), {result.requests} sent, "
        f"{result.retries} retries, {result.failed} without a valid score, {result.tokens:,} tokens",
    ]
    sources = per_source(con)
    if sources:
        w = max(10, *(len(r["source_id"]) for r in sources))
        lines.append(f"  {'source':<{w}} {'texts':>6} {'scored':>7} {'mean':>6} {'worst':>6} {'<=2':>5}")
        for r in sources:
            mean = _mean(r["mean"])
            lines.append(
                f"  {r['source_id']:<{w}} {r['texts']:>6} {r['scored']:>7} {mean:>6} "
                f"{'-' if r['worst'] is None else r['worst']:>6} {r['low']:>5}"
            )
    bad = worst(con)
    if bad:
        lines.append("  worst:")
        lines += [
            f"    {r['score']} {r['source_id']} {r['kind']}: {_cut(r['text'], 100)} -- {r['reason']}" for r in bad
        ]
    return "\n".join(lines)


__all__ = ["AuditResult", "LLMError", "format_summary", "report_section", "run_audit", "sample_texts"]
