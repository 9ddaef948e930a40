"""Checks for what the instruct passes and the audit ask the LLM for: a reason code, or "ok".

Cheap, deterministic string rules, like the caption checks (``curator.llm.validate``),
whose language rule they reuse:

- a **rewrite** of a template answer must keep every fact the template stated: the
  strings in ``keep`` (an option letter and name, a finding, a box) verbatim, and a
  yes/no answer its polarity, written first;
- a **region description** must pass the caption checks for its (label, anatomy,
  modality): name the finding, no other modality or body region, right language, no
  coordinates echoed back (a bare number);
- a **translation** must be Chinese (mostly CJK, no untranslated Latin word) and keep
  every number of the English text;
- a **score** must be an integer on the rubric's scale with a reason.
"""

from __future__ import annotations

import re

from curator.llm.validate import META, NUMBER, CaptionValidator, Rules, language_verdict

OK = "ok"
REASONS = {
    "empty": "the text is empty",
    "length": "the text is too long",
    "meta_text": "the text talks about itself or the request",
    "wrong_language": "the text is not in the requested language",
    "latin_in_chinese": "the Chinese text keeps an untranslated Latin-script word",
    "keep_missing": "the answer leaves out or changes a fact of the original answer (keep it verbatim)",
    "polarity": "the answer must begin with the original yes or no",
    "number_missing": "a number of the original text is missing",
    "score_range": "the score is outside the rubric's scale",
    "reason_missing": "the score has no reason",
}
YES = {"en": re.compile(r"^\W*yes\b", re.I), "zh": re.compile(r"^\W*(是|有|存在|可见)")}
NO = {"en": re.compile(r"^\W*no\b", re.I), "zh": re.compile(r"^\W*(否|不|没有|无|未)")}
# the answer's own meta-check: template answers may start with an option letter ("B. ...")
REWRITE_META = re.compile(META.pattern.replace(r"|^\s*(\d{1,2}[.)]|[-*\u2022])\s", ""), re.I)


def _contains(text: str, token: str) -> bool:
    if token.isascii() and len(token) <= 3:  # an option letter or a short abbreviation stands alone
        return re.search(rf"(?<![A-Za-z0-9]){re.escape(token)}(?![A-Za-z0-9])", text) is not None
    return token.casefold() in text.casefold()


def check_rewrite(text: str, language: str, keep: tuple[str, ...], polarity: bool | None, max_chars: int = 400) -> str:
    """A fluent rewrite of a template answer keeps its facts: see the module docstring."""
    text = text.strip()
    if not text:
        return "empty"
    if len(text) > max_chars:
        return "length"
    if REWRITE_META.search(text):
        return "meta_text"
    verdict = language_verdict(text, language)
    if verdict != OK:
        return verdict
    if polarity is not None:
        want, other = (YES, NO) if polarity else (NO, YES)
        lang = language if language in YES else "en"
        if not want[lang].search(text) or other[lang].search(text):
            return "polarity"
    if not all(_contains(text, k) for k in keep):
        return "keep_missing"
    return OK


def check_region(text: str, label: str, anatomy: str, modality: str, language: str, terms: dict, rules: Rules) -> str:
    """A region description passes the caption checks of its finding, anatomy and modality."""
    return CaptionValidator(label, anatomy, modality, language, terms, rules).check(text)


def check_translation(source: str, text: str, language: str = "zh", max_ratio: float = 4.0) -> str:
    """A translation is in ``language`` and keeps every number of ``source``."""
    text = text.strip()
    if not text:
        return "empty"
    if len(text) > max_ratio * len(source) + 40:
        return "length"
    verdict = language_verdict(text, language)
    if verdict != OK:
        return verdict
    have = {m.group(0) for m in NUMBER.finditer(text)}
    if any(m.group(0) not in have for m in NUMBER.finditer(source)):
        return "number_missing"
    return OK


def check_score(score: int, reason: str, low: int, high: int) -> str:
    if not low <= score <= high:
        return "score_range"
    if not reason.strip():
        return "reason_missing"
    return OK
