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
import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, ValidationError

from curator.config import CaptionSettings
from curator.llm.client import ChatClient, Completion
from curator.llm.validate import CaptionValidator, Rules

log = logging.getLogger(__name__)
GENERATOR = "llm"
FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$", re.I)
RAW_KEEP = 400  # characters of an unparseable reply kept on its failure row
# Re-asks may double the completion budget after a truncated reply, up to this factor.
MAX_TOKEN_GROWTH = 4

REASK = (
    "Some of that was not usable ({reasons}). Write {k} more captions for the same image, "
    'different from every caption above and following every rule. Reply as: {{"captions": ["..."]}} '
    "with exactly {k} strings."
)


class CaptionList(BaseModel):
    """The structured reply every prompt asks for."""

    model_config = ConfigDict(extra="forbid")
    captions: list[str]


@dataclass
class Job:
    """One request unit: a triplet in one language, and the cache key of its first request."""

    triplet: object  # curator.llm.offline.Triplet
    language: str
    messages: list[dict]
    key: str
    validator_args: dict


def parse_reply(content: str) -> list[str] | None:
    """The captions of a reply, or None when it is not the JSON object asked for."""
    text = FENCE.sub("", content.strip())
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, list):  # some local models drop the wrapper object
        data = {"captions": data}
    try:
        return CaptionList.model_validate(data).captions
    except ValidationError:
        return None


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
    captions = parse_reply(completion.content)
    if captions is None:
        status = "truncated" if completion.finish_reason == "length" else "malformed_json"
    else:
        status = "ok"
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
            reasons = sorted({r for _, r in rejected}) or ["too few captions"]
            if last["status"] == "truncated":
                max_tokens = min(max_tokens * 2, settings.max_tokens * MAX_TOKEN_GROWTH)
            messages += [
                {"role": "assistant", "content": last.get("raw") or json.dumps({"captions": last.get("captions", [])})},
                {
                    "role": "user",
                    "content": REASK.format(reasons=", ".join(reasons), k=need),
                },
            ]
        completion = await client.complete(messages, max_tokens)
        client.usage.prompt_tokens += completion.prompt_tokens
        client.usage.completion_tokens += completion.completion_tokens
        attempts.append(_attempt(completion, need))
        if attempts[-1]["status"] != "ok":
            log.debug("job %s/%s: %s reply", job.triplet.id, job.language, attempts[-1]["status"])
    return attempts
