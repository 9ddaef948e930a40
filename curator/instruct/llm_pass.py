"""The instruct stage's optional LLM passes over its template entries (recipe: ``[instruct.llm]``).

- **rewrite**: a template answer ("Yes.", "B. cardiomegaly.", "[120, 80, 410, 390]")
  becomes a fluent one that keeps every fact (``curator.llm.answers.check_rewrite``);
- **regions**: a region entry's answer becomes a GMAI-VL-style description of the boxed
  finding, from its label, box, modality and anatomy (checked like a caption);
- **translate**: a seeded share of the English-only entries (source captions, reports,
  the sources' VQA pairs: template entries exist in Chinese already) gets a Chinese copy,
  ``translated = true``, validated for language (mostly CJK) and numbers.

Same client, pace, caps, retries and response cache as the caption stage, with the
endpoint of the recipe's ``[caption]`` table. Requests are deduplicated by their
rendered messages (a million "Is there cardiomegaly? Yes." entries are one call), and
every answer is cached in the corpus as it lands, so a re-run calls nothing and a killed
run resumes. A reply that fails its checks is re-asked with the reason, then the
template answer stays, labelled ``generator = template-fallback`` with the failure in
``origin``; a failed translation writes no Chinese copy (counted). The stage feeds the
passes a chunk of samples at a time, so memory stays bounded by the chunk.

Which entries a share selects is a hash of (seed, pass, entry_id): independent of the
chunking, the worker count and every other entry.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

from curator.adapters.base import short_hash
from curator.config import CaptionSettings, InstructLLMSettings
from curator.errors import CuratorError
from curator.llm import answers
from curator.llm.cache import ResponseCache, cache_key
from curator.llm.client import ChatClient, RequestFailed, resolve_endpoint, run_all
from curator.llm.prompts import PromptFile, load_prompt
from curator.llm.structured import ask, settle
from curator.llm.validate import Rules

log = logging.getLogger(__name__)
LLM = "llm"
FALLBACK = "template-fallback"
PASSES = ("rewrite", "region", "translate")
# request size classes for the pace: replies of one pass are compared with each other only
SIZES = {"rewrite": 101, "region": 102, "translate": 103}


class Rewrite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: str


class Region(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str


class Translation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    translation: str


REPLIES = {"rewrite": Rewrite, "region": Region, "translate": Translation}
FIELD = {"rewrite": "answer", "region": "description", "translate": "translation"}


@dataclass
class PassStats:
    entries: int = 0  # entries the pass was asked to change
    llm: int = 0  # ... written by the LLM
    fallback: int = 0  # ... left as the template (rewrite, region) or not translated (translate)
    reasons: Counter = field(default_factory=Counter)  # why, for the fallbacks


@dataclass
class LLMPassResult:
    """What the passes did, for the stage's result, its marker and the summary."""

    enabled: bool = False
    off_reason: str | None = None  # asked for but not run (no endpoint)
    model: str | None = None
    endpoint: str | None = None
    prompts: dict = field(default_factory=dict)  # pass -> {"id", "sha256"}
    passes: dict = field(default_factory=lambda: {p: PassStats() for p in PASSES})
    jobs: int = 0  # distinct requests needed
    cached: int = 0  # ... answered from the cache
    requests: int = 0
    retries: int = 0
    failed: int = 0  # jobs whose requests failed for good (re-run to retry)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    pace: object | None = None

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("passes", "pace")}
        out["passes"] = {p: {**s.__dict__, "reasons": dict(s.reasons)} for p, s in self.passes.items()}
        return out

    @classmethod
    def from_dict(cls, d: dict) -> LLMPassResult:
        passes = {p: PassStats(**{**s, "reasons": Counter(s["reasons"])}) for p, s in d.get("passes", {}).items()}
        return cls(**{**{k: v for k, v in d.items() if k != "passes"}, "passes": passes or cls().passes})


@dataclass
class Job:
    name: str  # pass
    key: str
    messages: list[dict]
    check: object  # value -> reason code


def selected(seed: int, name: str, entry_id: str, share: float) -> bool:
    """Whether a seeded share picks this entry: a hash in [0, 1) below the share."""
    if share >= 1:
        return True
    return int(short_hash(str(seed), name, entry_id, n=12), 16) / 16**12 < share


def _show(value) -> str:
    return json.dumps(value, ensure_ascii=False)


class InstructLLM:
    """The passes of one stage run; ``process`` takes a chunk of samples' rows and returns them changed."""

    def __init__(self, corpus, settings: InstructLLMSettings, caption: CaptionSettings, templates, seed: int) -> None:
        self.corpus = corpus
        self.settings = settings
        self.templates = templates
        self.seed = seed
        self.result = LLMPassResult(enabled=settings.enabled)
        self.rules = Rules(2, settings.max_chars)
        self.client: ChatClient | None = None
        self._runner: asyncio.Runner | None = None
        self.prompts: dict[str, PromptFile] = {}
        self.endpoint = resolve_endpoint(caption) if settings.enabled else None
        if settings.enabled and self.endpoint is None:
            self.result.off_reason = "no LLM endpoint (set OPENAI_BASE_URL or caption.base_url)"
            log.warning("instruct: [instruct.llm] passes are off: %s; entries stay templated", self.result.off_reason)
        if self.endpoint is None:
            return
        wanted = {
            "rewrite": (settings.rewrite, settings.rewrite_prompt),
            "region": (settings.regions, settings.region_prompt),
            "translate": (settings.translate > 0, settings.translate_prompt),
        }
        for name, (on, prompt_id) in wanted.items():
            if on:
                prompt = load_prompt(prompt_id)
                for lang, table in prompt.data.items():
                    if isinstance(table, dict) and not all(isinstance(table.get(k), str) for k in ("system", "user")):
                        raise CuratorError(f"prompt '{prompt_id}' [{lang}] lacks system or user")
                self.prompts[name] = prompt
                self.result.prompts[name] = {"id": prompt.id, "sha256": prompt.sha256}
        if "translate" in self.prompts and "zh" not in self.prompts["translate"].data:
            raise CuratorError(f"prompt '{settings.translate_prompt}' has no [zh] table")
        # the passes' own sampling and completion budget over the caption stage's endpoint settings
        self.client_settings = caption.model_copy(
            update={"temperature": settings.temperature, "max_tokens": settings.max_tokens}
        )
        self.cache = ResponseCache(corpus)

    @property
    def active(self) -> bool:
        return self.endpoint is not None

    @property
    def fingerprint(self) -> str:
        """What the stage's marker must see change: the model and the prompts' bytes."""
        if not self.active:
            return "off"
        return short_hash(self.result.model or "", *[p.sha256 for p in self.prompts.values()], n=16)

    def start(self) -> None:
        """Learn the model (one model listing when unset) and check the endpoint serves it."""
        if not self.active:
            return
        self._runner = asyncio.Runner()
        try:
            self.client = self._runner.run(self._client())
        except BaseException:
            self._runner.close()
            self._runner = None
            raise
        self.result.model = self.client.endpoint.model
        self.result.endpoint = self.endpoint.host

    async def _client(self) -> ChatClient:
        client = ChatClient(self.endpoint, self.client_settings)
        try:
            await client.resolve_model()
            await client.check_model()
        except BaseException:
            await client.close()
            raise
        return client

    def close(self) -> None:
        if self._runner is None:
            return
        try:
            self._runner.run(self.client.close())
        finally:
            u = self.client.usage
            r = self.result
            r.requests, r.retries = u.requests, u.retries
            r.prompt_tokens, r.completion_tokens = u.prompt_tokens, u.completion_tokens
            r.pace = self.client.pace.stats if u.requests else None
            self._runner.close()
            self._runner = None

    # -- one chunk -------------------------------------------------------------------------
    def process(self, chunk: list[tuple[object, list[tuple[dict, object]]]]) -> list[list[dict]]:
        """[(view, [(row, entry)])] -> each sample's rows, rewritten where asked, translations appended."""
        if not self.active:
            return [[row for row, _ in pairs] for _, pairs in chunk]
        plans = []  # per sample: [(row, [(pass, job)])]
        jobs: dict[str, Job] = {}
        for view, pairs in chunk:
            plan = []
            for row, entry in pairs:
                wanted = self._jobs(view, row, entry)
                for job in wanted:
                    jobs.setdefault(job.key, job)
                plan.append((row, entry, wanted))
            plans.append((view, plan))
        todo = [j for j in jobs.values() if j.key not in self.cache]
        self.result.jobs += len(jobs)
        self.result.cached += len(jobs) - len(todo)
        fresh: dict[str, list[dict]] = {}
        failures: dict[str, str] = {}
        if todo:
            self._runner.run(self._call(todo, fresh, failures))
        self.result.failed += len(failures)
        out = []
        for view, plan in plans:
            rows, extra = [], []
            for row, entry, wanted in plan:
                row, translated = self._apply(view, row, entry, wanted, fresh, failures)
                rows.append(row)
                if translated is not None:
                    extra.append(translated)
            out.append(rows + extra)
        return out

    def _jobs(self, view, row: dict, entry) -> list[Job]:
        s = self.settings
        out = []
        if (
            "region" in self.prompts
            and row["task"] == "region"
            and entry.region
            and row["language"] in self.prompts["region"].data
        ):
            out.append(self._region_job(view, row, entry))
        elif (
            "rewrite" in self.prompts
            and row["generator"] == "template"
            and row["task"] in s.rewrite_tasks
            and entry.keep is not None
            and row["language"] in self.prompts["rewrite"].data
            and selected(self.seed, "rewrite", row["entry_id"], s.rewrite_fraction)
        ):
            out.append(self._rewrite_job(row, entry))
        if (
            "translate" in self.prompts
            and row["language"] == "en"
            and row["task"] in s.translate_tasks
            and row["form"] != "generated"  # generated captions exist in Chinese already
            and selected(self.seed, "translate", row["entry_id"], s.translate)
        ):
            out += [self._translate_job(t["value"]) for t in row["turns"]]
        return out

    def _messages(self, name: str, lang: str, **values) -> list[dict]:
        table = self.prompts[name].data[lang]
        try:
            return [
                {"role": "system", "content": table["system"].strip().format(**values)},
                {"role": "user", "content": table["user"].strip().format(**values)},
            ]
        except (KeyError, IndexError) as exc:
            raise CuratorError(f"prompt '{self.prompts[name].id}' uses an unknown placeholder: {exc}") from None

    def _key(self, name: str, messages: list[dict]) -> str:
        params = {"pass": name, "temperature": self.settings.temperature, "format": "structured"}
        return cache_key(messages, self.result.model or "", params)

    def _rewrite_job(self, row: dict, entry) -> Job:
        lang = row["language"]
        question, answer = row["turns"][0]["value"], row["turns"][1]["value"]
        messages = self._messages(
            "rewrite", lang, question=_show(question), answer=_show(answer), keep=_show(list(entry.keep))
        )
        keep, polarity, limit = tuple(entry.keep), entry.polarity, self.settings.max_chars

        def check(value, lang=lang):
            return answers.check_rewrite(value.answer, lang, keep, polarity, limit)

        return Job("rewrite", self._key("rewrite", messages), messages, check)

    def _region_job(self, view, row: dict, entry) -> Job:
        lang = row["language"]
        facts = entry.region
        t = self.templates
        modality, anatomy = view.modality or "mixed", view.anatomy or "unspecified"

        def say(text):
            try:
                return t.term(lang, text)
            except KeyError:
                return text

        messages = self._messages(
            "region", lang, label=facts["label"], term=facts["term"], box=facts["box"],
            modality=say(modality), anatomy=say(anatomy),
        )  # fmt: skip
        terms = t.terms(lang)

        def check(value):
            return answers.check_region(value.description, facts["label"], anatomy, modality, lang, terms, self.rules)

        return Job("region", self._key("region", messages), messages, check)

    def _translate_job(self, text: str) -> Job:
        messages = self._messages("translate", "zh", text=_show(text))

        def check(value):
            return answers.check_translation(text, value.translation)

        return Job("translate", self._key("translate", messages), messages, check)

    async def _call(self, todo: list[Job], fresh: dict, failures: dict) -> None:
        client = self.client

        async def one(job: Job) -> None:
            try:
                attempts = await ask(
                    client,
                    job.messages,
                    REPLIES[job.name],
                    job.check,
                    regenerations=self.settings.max_regenerations,
                    max_tokens=self.settings.max_tokens,
                    size=SIZES[job.name],
                    name=job.name,
                    reasons=answers.REASONS,
                )
            except RequestFailed as exc:
                failures[job.key] = exc.reason
                level = logging.DEBUG if exc.reason.startswith("cap_reached") else logging.WARNING
                log.log(level, "instruct %s request failed: %s", job.name, exc)
                return
            prompt = self.prompts[job.name]
            entry = {
                "pass": job.name,
                "model": self.result.model,
                "prompt_id": prompt.id,
                "prompt_sha256": prompt.sha256,
                "messages": job.messages,
                "attempts": attempts,
            }
            fresh[job.key] = entry
            await asyncio.to_thread(self.cache.put, job.key, entry)

        await run_all(one(job) for job in todo)

    def _answer(self, job: Job, fresh: dict, failures: dict) -> tuple[str | None, str, dict | None]:
        """(the checked text or None, the reason, the cache entry) of one job."""
        entry = fresh.get(job.key) or self.cache.get(job.key)
        if entry is None:
            return None, failures.get(job.key, "not_run"), None
        value, reason = settle(entry["attempts"], REPLIES[job.name], job.check)
        return (getattr(value, FIELD[job.name]).strip() if value else None), reason, entry

    def _apply(self, view, row: dict, entry, wanted: list[Job], fresh: dict, failures: dict):
        translated = None
        rewrite = [j for j in wanted if j.name in ("rewrite", "region")]
        if rewrite:
            job = rewrite[0]
            stats = self.result.passes[job.name]
            stats.entries += 1
            text, reason, cached = self._answer(job, fresh, failures)
            prompt = self.prompts[job.name]
            origin = json.loads(row["origin"] or "{}")
            template = {"prompt_id": row["prompt_id"], "prompt_sha256": row["prompt_sha256"], "model": row["model"]}
            if text is not None:
                stats.llm += 1
                origin["template"] = {**template, "answer": row["turns"][1]["value"]}
                turns = [row["turns"][0], {"from": "gpt", "value": text}]
                row = {
                    **row,
                    "turns": turns,
                    "generator": LLM,
                    "model": cached["model"],
                    "prompt_id": cached["prompt_id"],
                    "prompt_sha256": cached["prompt_sha256"],
                }
            else:
                stats.fallback += 1
                stats.reasons[reason] += 1
                origin["llm"] = {"pass": job.name, "prompt_id": prompt.id, "prompt_sha256": prompt.sha256,
                                 "model": self.result.model, "failure": reason}  # fmt: skip
                row = {**row, "generator": FALLBACK}
            row["origin"] = json.dumps(origin, sort_keys=True, ensure_ascii=False)
        jobs = [j for j in wanted if j.name == "translate"]
        if jobs:
            stats = self.result.passes["translate"]
            stats.entries += 1
            done = [self._answer(j, fresh, failures) for j in jobs]
            bad = [reason for text, reason, _ in done if text is None]
            if bad:
                stats.fallback += 1
                stats.reasons[bad[0]] += 1
            else:
                stats.llm += 1
                translated = self._translated(view, row, [text for text, _, _ in done], done[0][2])
        return row, translated

    def _translated(self, view, row: dict, texts: list[str], cached: dict) -> dict:
        turns = [{"from": t["from"], "value": text} for t, text in zip(row["turns"], texts, strict=True)]
        origin = json.loads(row["origin"] or "{}")
        origin["translated_from"] = row["entry_id"]
        return {
            **row,
            "entry_id": short_hash(view.sample_id, row["task"], row["form"], "zh", json.dumps(turns), "tr", n=20),
            "language": "zh",
            "turns": turns,
            "generator": LLM,
            "model": cached["model"],
            "prompt_id": cached["prompt_id"],
            "prompt_sha256": cached["prompt_sha256"],
            "origin": json.dumps(origin, sort_keys=True, ensure_ascii=False),
            "translated": True,
        }


def summary_lines(result: LLMPassResult | None) -> list[str]:
    """The build and `curator instruct` summary's lines about the LLM passes ([] when none were asked for)."""
    if result is None or not result.enabled:
        return []
    if result.off_reason:
        return [f"  llm passes: off ({result.off_reason}); entries stay templated"]
    lines = [
        f"  llm passes: model {result.model} at {result.endpoint}; {result.jobs} distinct requests "
        f"({result.cached} cached), {result.requests} sent, {result.retries} retries, {result.failed} failed, "
        f"{result.prompt_tokens + result.completion_tokens:,} tokens"
    ]
    for name, s in result.passes.items():
        if name not in result.prompts:
            continue
        p = result.prompts[name]
        kept = "not translated" if name == "translate" else "template-fallback"
        why = ", ".join(f"{k}={v}" for k, v in sorted(s.reasons.items()))
        lines.append(
            f"    {name:<9} {s.entries} entries: {s.llm} by the LLM, {s.fallback} {kept}"
            + (f" ({why})" if why else "")
            + f"  [{p['id']} {p['sha256'][:12]}]"
        )
    if result.failed:
        lines.append("    requests failed for good: re-run to retry them (answers so far are cached)")
    return lines
