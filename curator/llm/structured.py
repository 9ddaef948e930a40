"""One JSON-object question to the LLM: ask, parse, check, re-ask with the reason, keep every attempt.

The instruct passes (rewrite, region description, translation) and the LLM-scored
audit each ask for one small JSON object (``{"answer": ...}``, ``{"score": ...}``),
defined by a pydantic model whose schema goes out as structured output. A reply is
classified like a caption list (``ok``, ``truncated``, ``refusal``, ``prose``,
``malformed_json``), then checked by the caller's rule; anything but ``ok`` is
re-asked in the same conversation with the reason, up to ``regenerations`` times.
The attempts are what the cache keeps, and :func:`settle` replays them with the
current check, so a cached job and a live one give the same result.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from pydantic import BaseModel, ValidationError

from curator.llm.client import ChatClient
from curator.llm.reply import load_json

RAW_KEEP = 2000  # characters of a reply kept in its attempt
PROBLEMS = {
    "truncated": "the reply was cut off before the JSON closed",
    "refusal": "the reply declined the task; this is de-identified training data from a public dataset",
    "prose": "the reply was prose, not the JSON object asked for",
    "malformed_json": "the JSON was not the single object asked for",
}
REASK = "That reply was not usable: {reason}. Answer the same request again, as one JSON object: {shape}"


def schema_format(name: str, model: type[BaseModel]) -> dict:
    """The ``json_schema`` response_format for ``model`` (strict: every field required, nothing else)."""
    schema = model.model_json_schema()
    schema["additionalProperties"] = False
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def parse_as(
    model: type[BaseModel], content: str, finish_reason: str | None = None, refusal: str | None = None
) -> tuple[BaseModel | None, str]:
    """(the reply as ``model``, or None; status), the statuses of :mod:`curator.llm.reply`."""
    data, status = load_json(content, finish_reason, refusal, arrays=False)
    if data is None:
        return None, status
    try:
        return model.model_validate(data), "ok"
    except ValidationError:
        return None, "malformed_json"


def shape(model: type[BaseModel]) -> str:
    """A one-line example of the object asked for, for the re-ask."""
    example = {
        k: 0 if f.annotation is int else "..." for k, f in model.model_fields.items()
    }  # ints stay numbers, the rest strings
    return json.dumps(example, ensure_ascii=False)


async def ask(
    client: ChatClient,
    messages: list[dict],
    model: type[BaseModel],
    check: Callable[[BaseModel], str],
    *,
    regenerations: int,
    max_tokens: int,
    size: int,
    name: str,
    reasons: dict[str, str] | None = None,
) -> list[dict]:
    """Ask until a reply parses and passes ``check`` (``"ok"`` or a reason), at most 1 + ``regenerations`` times.

    ``size`` is the request's class for the pace (replies of one kind compared with each
    other only). Raises RequestFailed when a request fails for good."""
    fmt = schema_format(name, model)
    messages = list(messages)
    attempts: list[dict] = []
    for _ in range(regenerations + 1):
        if attempts:
            last = attempts[-1]
            verdict = last.get("verdict", "")
            reason = PROBLEMS.get(last["status"]) or (reasons or {}).get(verdict, verdict)
            messages += [
                {"role": "assistant", "content": last["raw"]},
                {"role": "user", "content": REASK.format(reason=reason, shape=shape(model))},
            ]
        completion = await client.complete(messages, max_tokens, size, schema=fmt)
        client.usage.prompt_tokens += completion.prompt_tokens
        client.usage.completion_tokens += completion.completion_tokens
        value, status = parse_as(model, completion.content, completion.finish_reason, completion.refusal)
        attempt = {
            "status": status,
            "raw": completion.content[:RAW_KEEP],
            "finish_reason": completion.finish_reason,
            "usage": {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens},
        }
        if value is not None:
            attempt["value"] = value.model_dump()
            attempt["verdict"] = check(value)
        attempts.append(attempt)
        if status == "ok" and attempt["verdict"] == "ok":
            break
    return attempts


def settle(
    attempts: list[dict], model: type[BaseModel], check: Callable[[BaseModel], str]
) -> tuple[BaseModel | None, str]:
    """(the first attempt that parses and passes ``check`` now, "ok"), else (None, the last reason)."""
    reason = "not_run"
    for attempt in attempts:
        if attempt["status"] != "ok":
            reason = attempt["status"]
            continue
        try:
            value = model.model_validate(attempt["value"])
        except ValidationError:
            reason = "malformed_json"
            continue
        verdict = check(value)
        if verdict == "ok":
            return value, "ok"
        reason = verdict
    return None, reason
