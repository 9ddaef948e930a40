"""Checks every generated caption must pass, whatever wrote it. Returns a reason or "ok"."""

from __future__ import annotations

import re

META = re.compile(r"\b(as an ai|language model|here (are|is) \d*\s*captions?|caption \d+:)", re.I)
CJK = re.compile(r"[\u4e00-\u9fff]")
MIN_CHARS, MAX_CHARS = 4, 400


def validate(caption: str, label_terms: list[str], language: str, seen: set[str]) -> str:
    text = caption.strip()
    if not text:
        return "empty"
    if not MIN_CHARS <= len(text) <= MAX_CHARS:
        return "length"
    if META.search(text):
        return "meta_text"
    has_cjk = bool(CJK.search(text))
    if language == "zh" and not has_cjk:
        return "wrong_language"
    if language == "en" and has_cjk:
        return "wrong_language"
    if label_terms and not any(t.lower() in text.lower() for t in label_terms):
        return "label_missing"
    if text in seen:
        return "duplicate"
    return "ok"
