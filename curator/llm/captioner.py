"""One LLM caption job: a (triplet, language) asked for n captions, validated, re-asked for the rest.

The first request renders the prompt; each re-ask continues the conversation (the
model sees what it wrote and why some of it was rejected) and asks only for the
missing number. Every attempt is kept in the job's cache entry, and the captions
table is derived from those attempts by :func:`assemble`, the same replay that
decides whether to re-ask, so a cached job and a live one give identical rows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from curator.config import CaptionSettings
from curator.llm.client import ChatClient, Completion
from curator.llm.reply import classify
from curator.llm.validate import REASONS, CaptionValidator, Rules

log = logging.getLogger(__name__)
GENERATOR = "llm"
RAW_KEEP = 400  # characters of an unparseable reply kept on its failure row
# Re-asks may double the completion budget after a truncated reply, up to this factor.
MAX_TOKEN_GROWTH = 4

# What the model is told about a rejected reply or caption, in words it can act on.
REPLY_PROBLEMS = {
    "truncated": "the reply was cut off before the JSON closed",
    "refusal": "the reply declined the task; these are de-identified training captions for a public dataset",
    "prose": "the reply was prose, not the JSON object asked for",
    "malformed_json": "the JSON was not a single object with a captions list of strings",
}
REASK = (
    "Some of that was not usable ({reasons}). Write {k} more captions for the same image, "
    'different from every caption above and following every rule. Reply as: {{"captions": ["..."]}} '
    "with exactly {k} strings."
)


@dataclass
class Job:
    """One request unit: a triplet in one language, and the cache key of its first request."""

    triplet: object  # curator.llm.offline.Triplet
    language: str
    messages: list[dict]
    key: str
    validator_args: dict


def assemble(attempts: list[dict], n: int, validator: CaptionValidator) -> tuple[list[str], list[tuple[str, str]]]:
    """(accepted captions, [(text, reason)] of rejected ones) from a job's attempts, in order."""
    ok: list[str] = []
    rejected: list[tuple[str, str]] = []
    for attempt in attempts:
        if attempt["status"] != "ok":
            rejected.append((attempt.get("raw", "")[:RAW_KEEP], attempt["status"]))
            continue
        for text in attempt["captions"][: attempt["asked"]]:
            if len(ok) >= n:
                break
            verdict = validator.check(text)
            if verdict == "ok":
                ok.append(text.strip())
            else:
                rejected.append((text.strip()[:RAW_KEEP], verdict))
    return ok, rejected


def _attempt(completion: Completion, asked: int) -> dict:
    captions, status = classify(completion.content, completion.finish_reason, completion.refusal)
    entry = {
        "asked": asked,
        "status": status,
        "finish_reason": completion.finish_reason,
        "usage": {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens},
    }
    if captions is None:
        entry["raw"] = completion.content[: RAW_KEEP * 5]
    else:
        entry["captions"] = captions
    return entry


async def run_job(job: Job, client: ChatClient, settings: CaptionSettings) -> list[dict]:
    """Ask, validate, re-ask for what is missing, up to ``max_regenerations`` times; return the attempts.

    Raises RequestFailed when a request fails for good (nothing is cached for the job then).
    """
    n = settings.captions_per_triplet
    rules = Rules(settings.min_chars, settings.max_chars)
    messages = list(job.messages)
    max_tokens = settings.max_tokens
    attempts: list[dict] = []
    for _ in range(settings.max_regenerations + 1):
        ok, rejected = assemble(attempts, n, CaptionValidator(**job.validator_args, rules=rules))
        need = n - len(ok)
        if need <= 0:
            break
        if attempts:
            last = attempts[-1]
            codes = sorted({r for _, r in rejected})
            reasons = [REPLY_PROBLEMS.get(c) or REASONS.get(c, c) for c in codes] or ["too few captions"]
            if last["status"] == "truncated":
                max_tokens = min(max_tokens * 2, settings.max_tokens * MAX_TOKEN_GROWTH)
            messages += [
                {"role": "assistant", "content": last.get("raw") or json.dumps({"captions": last.get("captions", [])})},
                {
                    "role": "user",
                    "content": REASK.format(reasons="; ".join(reasons), k=need),
                },
            ]
        completion = await client.complete(messages, max_tokens, need)
        client.usage.prompt_tokens += completion.prompt_tokens
        client.usage.completion_tokens += completion.completion_tokens
        attempts.append(_attempt(completion, need))
        if attempts[-1]["status"] != "ok":
            log.debug("job %s/%s: %s reply", job.triplet.id, job.language, attempts[-1]["status"])
    return attempts
