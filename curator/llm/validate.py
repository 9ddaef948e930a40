"""Checks every generated caption must pass, whatever wrote it: a reason code, or "ok".

One :class:`CaptionValidator` per (triplet, language) so duplicates are caught within
the triplet. The checks are cheap, deterministic string rules, deliberately strict:
a caption that fails is regenerated (LLM) and, when the retries run out, kept in the
captions table with its reason and never shipped in a shard. Reason codes, in the
order they are tested:

- ``empty``, ``length`` (outside [min_chars, max_chars]; half min_chars for CJK text)
- ``meta_text``: talks about itself ("As an AI...", "Here are 10 captions", numbering)
- ``wrong_language``: English with CJK script; Chinese that is mostly Latin prose
- ``label_missing``: a finding of the triplet (or an accepted synonym) is not named
- ``modality_contradiction`` / ``anatomy_contradiction``: names another imaging
  modality or a body region the triplet's anatomy excludes
- ``duplicate``: same text as an earlier caption of the triplet (case, spacing and
  punctuation ignored)

Limitation, by design: a finding the vocabulary has no Chinese term for is checked
in Chinese captions only if the caption keeps the English term; otherwise the label
check is skipped for that finding (the other checks still apply).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

OK = "ok"
REASONS = {
    "empty": "caption is empty",
    "length": "caption is shorter or longer than the configured bounds",
    "meta_text": "caption talks about itself or the request",
    "wrong_language": "caption is not in the requested language",
    "label_missing": "caption does not name a finding of its triplet",
    "modality_contradiction": "caption names another imaging modality",
    "anatomy_contradiction": "caption names a body region outside the triplet's anatomy",
    "duplicate": "caption repeats an earlier caption of the same triplet",
}

META = re.compile(
    r"(\bas an ai\b|language model|\bhere (are|is)\b|\bcaptions?\s*\d+\s*[:.]|^\s*captions?\s*:|\bi (cannot|can't)\b"
    r"|\bi('m| am) sorry\b|^\s*(sure|certainly|of course)\b|^\s*note\s*:|\bas requested\b|\bthis caption\b"
    r"|^\s*(\d{1,2}[.)]|[-*\u2022])\s|[{}]|作为(一个)?(ai|人工智能)|语言模型|以下是|^\s*好的|抱歉)",
    re.I,
)
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
OTHER_SCRIPTS = re.compile(r"[\u0400-\u04ff\u0590-\u06ff\u3040-\u30ff\uac00-\ud7af]")  # Cyrillic..Hangul
# Short upper-case tokens Chinese radiology text keeps in Latin script: CT, MRI, T2, H&E, DWI ...
LATIN_ABBREV = re.compile(r"(?<![A-Za-z])[A-Z][A-Z0-9&/-]{0,5}(?![A-Za-z])")
LATIN_LETTER = re.compile(r"[A-Za-z]")

# Accepted names of each canonical finding (curator.vocab), beyond the name itself.
# Stems are matched as substrings, case-insensitively.
SYNONYMS: dict[str, dict[str, list[str]]] = {
    "en": {
        "pleural effusion": ["effusion", "hydrothorax", "pleural fluid"],
        "cardiomegaly": ["enlarged heart", "cardiac enlargement", "enlarged cardiac silhouette", "cardiac silhouette"],
        "lung opacity": ["opacit", "opacification", "infiltrate"],
        "lung lesion": ["lesion"],
        "lung nodule": ["nodul"],
        "lung mass": ["mass"],
        "edema": ["oedema"],
        "consolidation": ["consolidat"],
        "pneumonia": ["pneumonic"],
        "atelectasis": ["atelecta", "collapse"],
        "pleural abnormality": ["pleura"],
        "pleural thickening": ["thickened pleura", "pleural thicken"],
        "support devices": ["device", "tube", "catheter", "central line", "pacemaker", "wire"],
        "enlarged cardiomediastinum": ["cardiomediast", "mediastin"],
        "no finding": [
            "normal",
            "unremarkable",
            "no acute",
            "no abnormal",
            "no significant",
            "no evidence of",
            "without abnormal",
            "no active",
            "no pathologic",
        ],
        "interstitial lung disease": ["interstitial"],
        "cancer": ["carcinoma", "malignan", "tumour", "tumor", "neoplas"],
        "tumour": ["tumor", "neoplas", "mass", "lesion"],
    },
    "zh": {
        "pleural effusion": ["胸腔积液", "胸水", "积液"],
        "cardiomegaly": ["心脏增大", "心影增大", "心脏扩大", "心影扩大"],
        "lung opacity": ["阴影", "密度增高", "混浊", "浸润"],
        "lung lesion": ["病变", "病灶"],
        "lung nodule": ["结节"],
        "lung mass": ["肿块"],
        "edema": ["水肿"],
        "consolidation": ["实变"],
        "pneumonia": ["肺炎"],
        "atelectasis": ["肺不张", "不张"],
        "pleural abnormality": ["胸膜"],
        "pleural thickening": ["胸膜增厚"],
        "support devices": ["装置", "导管", "置管", "起搏器", "插管"],
        "enlarged cardiomediastinum": ["纵隔"],
        "no finding": ["未见明显异常", "未见异常", "无明显异常", "未见", "正常", "无异常"],
        "interstitial lung disease": ["间质"],
        "cancer": ["癌", "恶性", "肿瘤"],
        "liver": ["肝"],
        "tumour": ["肿瘤", "占位", "肿块"],
    },
}


def _latin(term: str) -> str:
    """Regex for a term; short upper-case abbreviations must stand alone (CT, not 'CTA' or 'oCT')."""
    if term.isupper() or len(term) <= 3:
        return rf"(?<![A-Za-z]){re.escape(term)}(?![A-Za-z])"
    return re.escape(term)


# Words naming each imaging modality (curator.vocab.MODALITIES canonical names), any language.
MODALITY_TERMS: dict[str, list[str]] = {
    "CT": ["CT", "CTA", "computed tomograph", "计算机断层"],
    "MRI": ["MRI", "MR", "magnetic resonance", "T1-weighted", "T2-weighted", "FLAIR", "磁共振", "核磁"],
    "X-ray": ["radiograph", "x-ray", "xray", "plain film", "X线", "X光", "平片", "胸片"],
    "ultrasound": ["ultrasound", "sonograph", "sonogram", "doppler", "超声", "B超", "彩超"],
    "PET": ["PET", "positron emission", "正电子"],
    "histopathology": ["histolog", "histopatholog", "H&E", "micrograph", "病理", "组织学"],
    "fundus photography": ["fundus", "眼底"],
    "OCT": ["OCT", "optical coherence", "光学相干"],
    "endoscopy": ["endoscop", "colonoscop", "gastroscop", "内镜", "肠镜", "胃镜"],
    "dermoscopy": ["dermoscop", "dermatoscop", "皮肤镜"],
}
# Modalities that legitimately name each other (PET/CT, fundus photo beside OCT).
MODALITY_COMPATIBLE = {"PET": {"CT", "MRI"}, "CT": {"PET"}, "MRI": {"PET"}, "fundus photography": {"OCT"}}

# Body regions by group; a caption naming a group its triplet's anatomy excludes contradicts it.
REGIONS: dict[str, list[str]] = {
    "head": ["brain", "skull", "cranial", "cerebr", "intracranial", "脑", "颅"],
    "chest": ["chest", "thora", "lung", "pulmonary", "pleura", "mediastin", "胸", "肺", "纵隔"],
    "abdomen": ["abdom", "liver", "hepat", "kidney", "renal", "spleen", "pancrea", "腹", "肝", "肾", "脾", "胰"],
    "pelvis": ["pelvi", "prostat", "uterus", "uterine", "bladder", "盆腔", "前列腺", "子宫", "膀胱"],
    "knee": ["knee", "patell", "膝"],
    "spine": ["spine", "spinal", "vertebra", "脊柱", "椎"],
    "eye": ["retina", "fundus", "ocular", "optic disc", "眼", "视网膜"],
    "breast": ["breast", "mammo", "乳腺", "乳房"],
    "skin": ["skin", "cutaneous", "皮肤"],
}
REGION_COMPATIBLE = {
    "chest": {"spine", "abdomen", "breast"},
    "abdomen": {"pelvis", "spine", "chest"},
    "pelvis": {"abdomen", "spine"},
    "spine": {"chest", "abdomen", "pelvis", "head"},
    "head": {"eye", "spine"},
    "eye": {"head"},
    "breast": {"chest"},
}


@dataclass(frozen=True)
class Rules:
    min_chars: int = 8
    max_chars: int = 400


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in text if ch.isalnum())


def _compile(terms: list[str]) -> re.Pattern | None:
    terms = sorted({t for t in terms if t}, key=len, reverse=True)
    return re.compile("|".join(_latin(t) for t in terms), re.I) if terms else None


def _group(text: str) -> str | None:
    low = text.lower()
    for group, terms in REGIONS.items():
        if group == low or any(t.lower() in low for t in terms):
            return group
    return None


class CaptionValidator:
    """Validates the captions of one (triplet, language), remembering those it accepted."""

    def __init__(
        self,
        label: str | None,
        anatomy: str,
        modality: str,
        language: str,
        local_terms: dict[str, str] | None = None,
        rules: Rules | None = None,
    ):
        self.language = language
        self.rules = rules or Rules()
        self.seen: set[str] = set()
        local_terms = local_terms or {}
        findings = [p.strip() for p in (label or "").split(",") if p.strip()]
        self.findings: list[re.Pattern] = []
        for finding in findings:
            names = [finding, finding.replace("-", " "), *SYNONYMS.get("en", {}).get(finding, [])]
            if language != "en":
                local = [local_terms[finding]] if finding in local_terms else []
                local += SYNONYMS.get(language, {}).get(finding, [])
                if not local and language == "zh":
                    continue  # no known Chinese name: cannot check (see module docstring)
                names += local
            self.findings.append(_compile(names))
        # the triplet's own words may stay in Latin script inside Chinese text (no translation known)
        self.own_words = _compile([*findings, anatomy, modality])
        context = " ".join([label or "", anatomy, modality]).lower()
        own = {modality} | MODALITY_COMPATIBLE.get(modality, set())
        foreign = (
            [t for m, terms in MODALITY_TERMS.items() if m not in own for t in terms if t.lower() not in context]
            if modality in MODALITY_TERMS
            else []
        )
        # a term of the triplet's own modality is never foreign ("MR" is in "MRI", "CT" in "PET/CT")
        owned = {t.lower() for m in own for t in MODALITY_TERMS.get(m, [])}
        self.modality_foreign = _compile([t for t in foreign if t.lower() not in owned])
        group = _group(anatomy)
        allowed = {group} | REGION_COMPATIBLE.get(group, set()) if group else set()
        regions = [t for g, terms in REGIONS.items() if g not in allowed for t in terms if t.lower() not in context]
        regions = [t for t in regions if not any(t.lower() in o for o in (anatomy.lower(), (label or "").lower()))]
        self.region_foreign = _compile(regions) if group else None

    def check(self, caption: str) -> str:
        """A reason code, or "ok" (and the caption is remembered for the duplicate check)."""
        text = caption.strip()
        if not text:
            return "empty"
        # a CJK character carries about as much as two Latin ones
        low = self.rules.min_chars if self.language == "en" else max(2, self.rules.min_chars // 2)
        if not low <= len(text) <= self.rules.max_chars:
            return "length"
        if META.search(text):
            return "meta_text"
        if not self._language_ok(text):
            return "wrong_language"
        if any(p is not None and not p.search(text) for p in self.findings):
            return "label_missing"
        if self.modality_foreign is not None and self.modality_foreign.search(text):
            return "modality_contradiction"
        if self.region_foreign is not None and self.region_foreign.search(text):
            return "anatomy_contradiction"
        key = _norm(text)
        if key in self.seen:
            return "duplicate"
        self.seen.add(key)
        return OK

    def _language_ok(self, text: str) -> bool:
        cjk = len(CJK.findall(text))
        if self.language == "en":
            return cjk == 0 and not OTHER_SCRIPTS.search(text)
        if self.language == "zh":
            rest = LATIN_ABBREV.sub("", text)
            for p in [*self.findings, self.own_words]:  # an English term kept in Chinese text is fine
                if p is not None:
                    rest = p.sub("", rest)
            return cjk >= 2 and len(LATIN_LETTER.findall(rest)) <= cjk
        return True  # no rule for other languages yet: the other checks still apply
