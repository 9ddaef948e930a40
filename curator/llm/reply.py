"""The reply every caption prompt asks for: its JSON schema (sent as structured output) and its parsing.

Kept apart from the client and the captioner so both can use it without importing
each other. A reply is classified before its captions are validated:

- ``ok``: a JSON object ``{"captions": [...]}`` (or a bare list), possibly inside a
  code fence or after a line of prose ("Sure! {...}"): the object is taken out
- ``truncated``: the reply was cut off at the token limit (``finish_reason=length``)
- ``refusal``: the model declined ("I'm sorry, I can't...", or the API's ``refusal``)
- ``prose``: no JSON at all
- ``malformed_json``: JSON, but not the shape asked for
"""

from __future__ import annotations

import json
import re

from pydantic import BaseModel, ConfigDict, ValidationError

FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$", re.I)
REFUSAL = re.compile(
    r"\b(i('m| am) (sorry|unable|not able)|i (cannot|can't|won't|will not) (help|assist|provide|comply|do)"
    r"|i must decline|as an ai\b)|抱歉|无法(提供|协助|完成)|不能(提供|协助)",
    re.I,
)
STATUSES = ("ok", "truncated", "refusal", "prose", "malformed_json")


class CaptionList(BaseModel):
    """The structured reply every prompt asks for."""

    model_config = ConfigDict(extra="forbid")
    captions: list[str]


def response_format(mode: str, k: int) -> dict | None:
    """The ``response_format`` request field for ``mode`` when ``k`` captions are asked for."""
    if mode == "json_object":
        return {"type": "json_object"}
    if mode != "json_schema":
        return None
    schema = CaptionList.model_json_schema()
    # an exact count: llama.cpp's grammar and vLLM's guided decoding enforce it, so a small
    # model cannot answer with the wrong number of captions
    schema["properties"]["captions"].update({"minItems": k, "maxItems": k})
    return {"type": "json_schema", "json_schema": {"name": "captions", "schema": schema, "strict": True}}


def _load(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


def load_json(
    content: str, finish_reason: str | None = None, refusal: str | None = None, arrays: bool = True
) -> tuple[object | None, str]:
    """(the reply's JSON value, "ok") or (None, the status): fences stripped, prose around the
    value cut away; ``arrays=False`` looks for an object only."""
    if refusal:
        return None, "refusal"
    text = FENCE.sub("", (content or "").strip())
    data = _load(text)
    if data is None:
        opens, closes = ("{", "[") if arrays else ("{",), ("}", "]") if arrays else ("}",)
        start = min((i for i in (text.find(c) for c in opens) if i >= 0), default=-1)
        end = max(text.rfind(c) for c in closes)
        if start >= 0 and end > start:
            data = _load(text[start : end + 1])
        if data is None:
            if finish_reason == "length":
                return None, "truncated"
            if REFUSAL.search(text):
                return None, "refusal"
            return None, "prose" if start < 0 else "malformed_json"
    return data, "ok"


def classify(
    content: str, finish_reason: str | None = None, refusal: str | None = None
) -> tuple[list[str] | None, str]:
    """(captions or None, status): see the module docstring for the statuses."""
    data, status = load_json(content, finish_reason, refusal)
    if data is None:
        return None, status
    if isinstance(data, list):  # some local models drop the wrapper object
        data = {"captions": data}
    try:
        return CaptionList.model_validate(data).captions, "ok"
    except ValidationError:
        return None, "malformed_json"


def parse_reply(content: str) -> list[str] | None:
    """The captions of a reply, or None when it holds no caption list."""
    return classify(content)[0]
