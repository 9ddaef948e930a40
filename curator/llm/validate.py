"""Checks every generated caption must pass, whatever wrote it: a reason code, or "ok".

One :class:`CaptionValidator` per (triplet, language) so duplicates are caught within
the triplet. The checks are cheap, deterministic string rules, deliberately strict:
a caption that fails is regenerated (LLM) and, when the retries run out, kept in the
captions table with its reason and never shipped in a shard. Reason codes, in the
order they are tested:

- ``empty``, ``length`` (outside [min_chars, max_chars]; half min_chars for CJK text)
- ``meta_text``: talks about itself ("As an AI...", "Here are 10 captions", numbering)
- ``wrong_language``: English with CJK script; Chinese that is mostly Latin prose
- ``latin_in_chinese``: a Chinese caption keeps a Latin-script word that is not a
  standard abbreviation (CT, MRI, PET/CT, T1/T2, H&E, DWI...): "超声示breastbenign",
  "心脏增大、emphysema" (an untranslated finding)
- ``doubled_word``: a word written twice ("CT image image"), a Chinese word or
  character doubled ("部位部位", "肝脏脏"; reduplications such as 渐渐 are fine)
- ``normal_as_finding``: a normal study worded as a finding ("evidence of no finding",
  "可见未见明显异常")
- ``native_code``: a dataset's code standing in for a finding ("consistent with nv",
  "class_3")
- ``bare_number``: a number standing alone for a finding ("the image demonstrates 4");
  grades, stages, scores and measurements are fine ("grade 4", "BI-RADS 4", "5 mm")
- ``label_missing``: a finding of the triplet (or an accepted synonym) is not named
- ``modality_contradiction`` / ``anatomy_contradiction``: names another imaging
  modality or a body region the triplet's anatomy excludes
- ``duplicate``: same text as an earlier caption of the triplet (case, spacing and
  punctuation ignored)

Limitation, by design: a finding the vocabulary has no Chinese term for cannot be
label-checked in Chinese (and an English term kept for it fails ``latin_in_chinese``);
the offline generator writes no Chinese captions for such a triplet and warns instead.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from curator.vocab import DERMOSCOPY, NORMAL_STATES

OK = "ok"
REASONS = {
    "empty": "caption is empty",
    "length": "caption is shorter or longer than the configured bounds",
    "meta_text": "caption talks about itself or the request",
    "wrong_language": "caption is not in the requested language",
    "label_missing": "caption does not name a finding of its triplet",
    "modality_contradiction": "caption names another imaging modality",
    "anatomy_contradiction": "caption names a body region outside the triplet's anatomy",
    "latin_in_chinese": "Chinese caption keeps an untranslated Latin-script word",
    "doubled_word": "caption writes a word or character twice in a row",
    "normal_as_finding": "a normal study is worded as a finding",
    "bare_number": "a bare number stands in for a finding",
    "native_code": "a dataset's native code stands in for a finding",
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
LATIN_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9&/+'-]*")
# A Latin-script token Chinese radiology text keeps: upper-case abbreviations with digits and
# joiners (CT, MRI, PET/CT, T2WI, H&E, DWI, FLAIR, SPECT, X in X线, B in B超), numbers with
# units (5mm, 3cm), and the few mixed-case standard ones.
ABBREV = re.compile(r"[A-Z][A-Z0-9&/+-]{0,9}|\d+(\.\d+)?(mm|cm|ml|mg|kg|HU|MHz)?")
MIXED_CASE_OK = {"Gd", "Tc", "mAs", "kV", "kVp", "HU", "mm", "cm", "ml"}
EN_DOUBLED = re.compile(r"\b([a-z]+)\s+\1\b", re.I)
# doubled Chinese: a word of 2-4 characters twice, or one character twice (not a reduplication)
ZH_DOUBLED_WORD = re.compile(r"([\u4e00-\u9fff]{2,4})\1")
ZH_DOUBLED_CHAR = re.compile(r"([\u4e00-\u9fff])\1")
ZH_REDUPLICATION = set("常渐稍略微轻仅刚偏明斑点片条层个多缓")
NORMAL_AS_FINDING = {
    "en": re.compile(
        r"\bno[ -]findings?\b|\b(evidence|features?|signs?|findings?) of (a |an )?(normal|no abnormality)"
        r"|\b(showing|demonstrat\w*|consistent with|notable for) no finding",
        re.I,
    ),
    "zh": re.compile(r"(可见|存在|提示|符合|典型表现[:：]?)(为)?(未见明显异常|未见异常|无明显异常|无异常)"),
}
# a number is a grade, stage, score, count or measurement when a word like these is beside it
NUMBER_CONTEXT = {
    "en": re.compile(
        r"\b(grade|grades|stage|type|category|level|score|bi-?rads|kl|kellgren-lawrence|gleason|tnm"
        r"|segment|lobe|cervical|thoracic|lumbar|rib|zone|t|c|l|s|d|th)[ -]?(\d+(\.\d+)?)(\s*(to|-|/)\s*\d+)?\b"
        r"|\b\d+(\.\d+)?\s*(mm|cm|ml|mg|kg|hu|%|years?|weeks?|months?|days?|x|th|st|nd|rd|o'clock)\b"
        r"|\b(one|two|\d+)[ -](view|views|slices?|images?|lesions?|nodules?|foci|levels?)\b",
        re.I,
    ),
    "zh": re.compile(
        r"\d+(\.\d+)?\s*(级|期|型|度|类|分|mm|cm|毫米|厘米|个|处|枚|岁|周|%|区|段|肋|椎)|(第|分级|分期|BI-RADS|T|C|L|S)\s*\d+",
        re.I,
    ),
}
NATIVE_CODE = re.compile(r"\b[A-Za-z]+_\w+\b|\b(class|label)[ _-]?\d+\b", re.I)
NUMBER = re.compile(r"(?<![A-Za-z0-9])(?<!\d\.)\d+(\.\d+)?(?![A-Za-z0-9])(?!\.\d)")

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
        "pulmonary edema": ["oedema", "edema"],
        "pneumothorax": ["pneumothora", "air in the pleural space"],
        "meniscal tear": ["menisc"],
        "acl pathology": ["anterior cruciate", "acl"],
        "gallstone": ["cholelithiasis", "calculus", "calculi", "gallstones"],
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
            "without acute",
            "no abnormality",
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
        "pulmonary edema": ["水肿"],
        "gallstone": ["结石"],
        "meniscal tear": ["半月板"],
        "acl pathology": ["前交叉韧带"],
        "pneumothorax": ["气胸", "积气"],
        "consolidation": ["实变"],
        "pneumonia": ["肺炎"],
        "atelectasis": ["肺不张", "不张"],
        "pleural abnormality": ["胸膜"],
        "pleural thickening": ["胸膜增厚"],
        "support devices": ["装置", "导管", "置管", "起搏器", "插管"],
        "enlarged cardiomediastinum": ["纵隔"],
        "no finding": ["未见明显异常", "未见异常", "无明显异常", "未见", "正常", "无异常", "未发现", "未显示异常"],
        "interstitial lung disease": ["间质"],
        "cancer": ["癌", "恶性", "肿瘤"],
        "liver": ["肝"],
        "tumour": ["肿瘤", "占位", "肿块"],
    },
}


def _latin(term: str) -> str:
    """Regex for a term; short upper-case abbreviations must stand alone (CT, not 'CTA' or 'oCT')."""
    if term.isascii() and (term.isupper() or len(term) <= 3):
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
            if _is_code(finding) and not finding.isdigit():
                # a code is never written out: its vocabulary name is what must be named
                if finding not in DERMOSCOPY:
                    continue
                finding = DERMOSCOPY[finding]
            # a normal state of any kind ("no diabetic retinopathy") is named by normal-study wording
            alias = "no finding" if finding in NORMAL_STATES else finding
            names = [finding, finding.replace("-", " "), *SYNONYMS.get("en", {}).get(alias, [])]
            if language != "en":
                local = [local_terms[finding]] if finding in local_terms else []
                local += SYNONYMS.get(language, {}).get(alias, [])
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
        # findings that are a dataset's code rather than a name ("nv", "class_3", "4")
        codes = [f for f in findings if _is_code(f) and not f.isdigit()]  # digits: see bare_number
        self.codes = _compile(codes) if codes else None

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
        verdict = self._language(text)
        if verdict != OK:
            return verdict
        if self._doubled(text):
            return "doubled_word"
        normal = NORMAL_AS_FINDING.get(self.language)
        if normal is not None and normal.search(text):
            return "normal_as_finding"
        if self.codes is not None and self.codes.search(text) or NATIVE_CODE.search(text):
            return "native_code"
        if self._bare_number(text):
            return "bare_number"
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

    def _language(self, text: str) -> str:
        return language_verdict(text, self.language)

    def _doubled(self, text: str) -> bool:
        if self.language == "en":
            return EN_DOUBLED.search(text) is not None
        if ZH_DOUBLED_WORD.search(text):
            return True
        return any(m.group(1) not in ZH_REDUPLICATION for m in ZH_DOUBLED_CHAR.finditer(text))

    def _bare_number(self, text: str) -> bool:
        """A number no grade, stage, score or unit word explains."""
        context = NUMBER_CONTEXT.get(self.language, NUMBER_CONTEXT["en"])
        rest = context.sub(" ", text)
        rest = re.sub(r"\b[A-Z]+\d+[A-Z]*\b|\d+[A-Z]+\b", " ", rest)  # T2, T1WI, 3D, 2D: not numbers
        return NUMBER.search(rest) is not None


def language_verdict(text: str, language: str) -> str:
    """``ok``, ``wrong_language`` or ``latin_in_chinese``: is ``text`` written in ``language``?

    English: no CJK or other non-Latin script. Chinese: mostly CJK (at least two CJK
    characters and at most one foreign Latin word per two of them), and no Latin word
    beyond the abbreviations Chinese radiology text keeps (CT, MRI, T2WI, 5mm...).
    Other languages: no rule yet.
    """
    cjk = len(CJK.findall(text))
    if language == "en":
        return OK if cjk == 0 and not OTHER_SCRIPTS.search(text) else "wrong_language"
    if language == "zh":
        foreign = [w for w in LATIN_WORD.findall(text) if not ABBREV.fullmatch(w) and w not in MIXED_CASE_OK]
        if cjk < 2 or len(foreign) > cjk / 2:
            return "wrong_language"  # mostly Latin prose
        return "latin_in_chinese" if foreign else OK
    return OK


def _is_code(finding: str) -> bool:
    """A finding that is a dataset's code, not a name: digits, an underscore, or a short
    abbreviation the vocabulary maps to a longer name (HAM10000's "nv", "bkl")."""
    return finding.isdigit() or "_" in finding or finding in DERMOSCOPY
