"""De-identification: what an identifier is, in every form a path or a message can hold it.

DICOM headers carry the PS3.15 Annex E basic-profile attributes (names, IDs,
dates, times, institutions, physicians, UIDs). Layouts put some of them in
folder and file names (``DOE_JOHN/1961-04-23/…``). This module learns them from
headers (:func:`dicom_identity`) and removes them from any text
(:class:`Redactor`), by design rather than by substring replacement:

* **Tokens, never substrings.** A path component is read as a sequence of
  alphanumeric tokens (``Saint_Bartholomew_General_Hospital`` -> four tokens); an
  identifier matches a *contiguous run of whole tokens* (separators between them
  free) or a single token that is its concatenation (``JohnDoe``). ``dicomdirtests``
  never loses ``test``; ``transform_2`` never loses ``2``.
* **Every form.** Names in any order, separator or case, with ASCII
  transliteration (Müller, Mueller and Muller are one name); family and given
  names alone too. Dates as YYYYMMDD, YYYY-MM-DD, DD.MM.YYYY, MM-DD-YYYY, two-digit
  years, month names (23Apr1961); times as HHMMSS and HH-MM-SS; datetimes.
* **Placeholders are not identifiers.** ``test``, ``unknown``, ``anonymous``, one
  character values, all-zero values, modality codes and the like are what
  anonymisers write *instead* of an identifier; matching them would rewrite
  paths without removing anything.
* **Categories.** Patient names and IDs become ``[patient-<keyed>]`` (keyed per
  patient so files stay distinguishable), StudyID ``[study-<keyed>]``, the rest
  ``[date]``, ``[time]``, ``[physician]``, ``[institution]``, ``[id]``, ``[uid]``.
* **Keyed layouts.** A source whose card says ``identifiers_in_paths = true``
  (its layout is *made of* identifiers) gets every component holding one replaced
  whole by a keyed token ``k-<hmac>`` (its file extension kept). The map back to
  the original relative path is the never-shipped *lookup* (:func:`save_lookup`),
  written outside the corpus, so an auditor holding the original data and the
  lookup goes from a sample to its file.

Descriptions (StudyDescription, SeriesDescription, ProtocolName) are in the basic
profile too, but they are free text ("CHEST PA") whose words are ordinary layout
words: they are never read, so they can neither leak from here nor eat paths.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import unicodedata
from collections.abc import Iterable
from datetime import date
from pathlib import Path

# -- what is an identifier -----------------------------------------------------------
# PS3.15 Annex E basic profile attributes that can name a folder or file, by kind.
# Any PN, DA, TM or DT element anywhere in the header counts too (walked in dicom_identity).
PATIENT_IDS = ("PatientID", "OtherPatientIDs", "IssuerOfPatientID", "MedicalRecordLocator", "PatientAge")
ACCESSION_IDS = (
    "AccessionNumber",
    "AdmissionID",
    "ServiceEpisodeID",
    "RequestedProcedureID",
    "ScheduledProcedureStepID",
    "PerformedProcedureStepID",
    "DeviceSerialNumber",
    "StationName",
    "FillerOrderNumberImagingServiceRequest",
    "PlacerOrderNumberImagingServiceRequest",
)
INSTITUTIONS = ("InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "PatientAddress")
PHYSICIANS = (
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "RequestingPhysician",
    "OperatorsName",
    "ScheduledPerformingPhysicianName",
    "ConsultingPhysicianName",
)
PATIENT_NAMES = ("PatientName", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName")
UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")

# Values anonymisers and test data write in place of an identifier: never redacted.
PLACEHOLDERS = frozenset(
    """test tests testing unknown unk anonymous anonymized anonymised anon anonymous1 none null nil na n a
    patient patients name noname no name subject phantom demo sample example removed redacted deidentified
    de identified xxx xx yyy zzz ano nym anonymize anonymise empty blank default other missing not given
    doctor dr physician referring hospital institution clinic department id""".split()
)
# Layout words and modality codes that an odd header might hold as a "name": never identifiers.
LAYOUT_WORDS = frozenset(
    """ct mr mri pt pet us cr dx mg nm xa rf ot sc sr seg rtstruct rtdose rtplan dicom dcm img image images
    series study studies scan scans data files file export exports raw jpeg jpg png tif tiff nii gz dir
    dicomdir axial sagittal coronal localizer scout chest head brain abdomen pelvis spine knee""".split()
)
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
MONTHS_LONG = "january february march april may june july august september october november december".split()
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)  # letters and digits; '_' separates like '-', '.', ' '
_SPECIAL = str.maketrans({"ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "đ": "d"})
_GERMAN = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})
TAG = re.compile(r"\[(?:patient|study)-[0-9a-f]{8}\]|\[(?:date|time|physician|institution|id|uid|redacted)\]")
KEYED = re.compile(r"k-[0-9a-f]{12}")


def fold(text: str) -> str:
    """ASCII, case-folded: Müller -> muller, Øster -> oster."""
    text = unicodedata.normalize("NFKD", str(text).translate(_SPECIAL))
    return "".join(c for c in text if not unicodedata.combining(c)).casefold()


def spellings(token: str) -> set[str]:
    """The ASCII spellings of one token: Müller -> {muller, mueller}."""
    return {fold(token), fold(str(token).translate(_GERMAN))}


def _is_placeholder(tokens: tuple[str, ...]) -> bool:
    joined = "".join(tokens)
    return (
        not tokens
        or len(joined) < 2
        or set(joined) <= {"0"}
        or all(t in PLACEHOLDERS or t in LAYOUT_WORDS for t in tokens)
        or " ".join(tokens) in PLACEHOLDERS
    )


def _variants(value: str) -> set[tuple[str, ...]]:
    """Token sequences (and the single-token concatenation) of one value in all its spellings."""
    raw = _TOKEN.findall(str(value))
    out: set[tuple[str, ...]] = set()
    for translate in (fold, lambda s: fold(str(s).translate(_GERMAN))):
        seq = tuple(translate(t) for t in raw)
        if seq and not _is_placeholder(seq):
            out.add(seq)
            out.add(("".join(seq),))
    return out


def name_forms(value: str) -> set[tuple[str, ...]]:
    """A DICOM person name (Family^Given^Middle^Prefix^Suffix) in any order, joined or alone."""
    groups = [g for g in str(value).split("=")[0].split("^") if g.strip()]
    parts = [p for g in groups[:3] for p in _TOKEN.findall(g)]
    forms: set[tuple[str, ...]] = set()
    if not parts:
        return forms
    orders = {tuple(parts), tuple(reversed(parts))}
    if len(parts) >= 2:  # family given / given family / given middle family ...
        orders.add((*parts[1:], parts[0]))
        orders.add((parts[-1], *parts[:-1]))
    for order in orders:
        forms |= _variants(" ".join(order))
    for part in parts:
        # a family or given name alone is an identifier when it looks like one: letters, 2+ characters
        if part.isalpha() and len(part) >= 2:
            forms |= {v for v in _variants(part) if len(v) == 1}
    # initials with the family name (J_Doe, Doe_J)
    if len(parts) >= 2 and parts[0].isalpha():
        forms |= _variants(f"{parts[1][0]} {parts[0]}") | _variants(f"{parts[0]} {parts[1][0]}")
    return forms


def date_forms(value: str) -> set[tuple[str, ...]]:
    """A DICOM DA (YYYYMMDD) or the date of a DT, in every common written form."""
    digits = re.sub(r"\D", "", str(value))[:8]
    try:
        d = date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return set()
    if d.year < 1800:
        return set()
    y, yy = f"{d.year:04d}", f"{d.year % 100:02d}"
    forms: set[tuple[str, ...]] = set()
    for m in {f"{d.month:02d}", str(d.month)}:
        for dd in {f"{d.day:02d}", str(d.day)}:
            for seq in ((y, m, dd), (dd, m, y), (m, dd, y), (dd, m, yy), (m, dd, yy), (yy, m, dd)):
                forms.add(seq)
                if len(m) == 2 and len(dd) == 2:
                    forms.add(("".join(seq),))
        for mon in (MONTHS[d.month - 1], MONTHS_LONG[d.month - 1]):
            for dd in {f"{d.day:02d}", str(d.day)}:
                for seq in ((dd, mon, y), (mon, dd, y), (y, mon, dd), (dd, mon, yy)):
                    forms.add(seq)
                    forms.add(("".join(seq),))
    return forms


def time_forms(value: str) -> set[tuple[str, ...]]:
    """A DICOM TM (HHMMSS.FFFFFF) as HHMMSS, HH-MM-SS and with its fraction; HHMM alone is too common."""
    text = str(value).strip()
    digits, _, frac = text.partition(".")
    digits = re.sub(r"\D", "", digits)
    if len(digits) < 6 or digits.startswith("0000"):  # 00:00:xx is a counter far more often than a time
        return set()
    h, m, s = digits[:2], digits[2:4], digits[4:6]
    forms = {(h + m + s,), (h, m, s)}
    if frac:
        forms |= {(h + m + s, frac), (h, m, s, frac)}
    return forms


def datetime_forms(value: str) -> set[tuple[str, ...]]:
    digits = re.sub(r"\D", "", str(value))
    forms = date_forms(digits[:8])
    if len(digits) >= 14:
        forms |= time_forms(digits[8:14]) | {(digits[:14],), (digits[:8], digits[8:14])}
    return forms


# -- from a DICOM header -----------------------------------------------------------------
# Header walks stop here: an enhanced multi-frame object repeats its groups per frame,
# and a crafted one with 100,000 frames must not cost a walk of millions of elements.
MAX_HEADER_ELEMENTS = 20_000


def dicom_identity(ds) -> dict:
    """Identifiers of one header: ``patient``/``study`` (hashed into keys) and ``identifiers``
    (kind -> values) for redaction. Never stored; only :class:`Redactor` reads them."""
    found: dict[str, set[str]] = {}

    def add(kind: str, value) -> None:
        values = value if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue" else [value]
        for v in values:
            if v not in (None, "") and str(v).strip():
                found.setdefault(kind, set()).add(str(v).strip())

    def get(keyword):
        try:
            return ds.get(keyword)
        except Exception:  # noqa: BLE001 - a malformed value teaches us nothing
            return None

    by_keyword = {
        keyword: kind
        for kind, keywords in (
            ("patient_id", PATIENT_IDS),
            ("id", ACCESSION_IDS),
            ("institution", INSTITUTIONS),
            ("physician", PHYSICIANS),
            ("patient_name", PATIENT_NAMES),
            ("uid", UIDS),
            ("study_id", ("StudyID",)),
        )
        for keyword in keywords
    }
    by_vr = {"PN": "person", "DA": "date", "TM": "time", "DT": "datetime"}
    try:
        # the whole header, sequences included: a DICOMDIR keeps every patient's ID in its records
        for n, elem in enumerate(ds.iterall()):
            if n >= MAX_HEADER_ELEMENTS:
                break
            kind = by_keyword.get(elem.keyword) or by_vr.get(elem.VR)
            if kind:
                try:
                    add(kind, elem.value)
                except Exception:  # noqa: BLE001
                    continue
    except Exception:  # noqa: BLE001 - a damaged sequence: what was read so far counts
        pass
    patient = get("PatientID")
    study = get("StudyInstanceUID")
    return {
        "patient": str(patient) if patient not in (None, "") else None,
        "study": str(study) if study not in (None, "") else None,
        "identifiers": {k: sorted(v) for k, v in found.items()},
    }


# -- redaction ------------------------------------------------------------------------------
class Redactor:
    """Learns identifiers (:meth:`learn`) and removes them from paths and messages (:meth:`redact`)."""

    def __init__(self, key: bytes, source_id: str, keyed_paths: bool = False):
        self.key = key
        self.source_id = source_id
        self.keyed_paths = keyed_paths
        self._forms: dict[tuple[str, ...], str] = {}  # token sequence -> tag
        self._longest = 0
        self._embedded: dict[str, str] = {}  # IDs with digits, found after a prefix too (PAT4MR1)
        self.lookup: dict[str, str] = {}  # redacted uri -> original uri (keyed layouts only)

    def __bool__(self) -> bool:
        return bool(self._forms)

    def state(self) -> dict[str, str]:
        """What was learned, as a plain dict (token sequence joined by a unit separator -> tag), for units."""
        return {"\x1f".join(form): tag for form, tag in self._forms.items()}

    @classmethod
    def from_state(cls, key: bytes, source_id: str, keyed_paths: bool, state: dict[str, str]) -> Redactor:
        redactor = cls(key, source_id, keyed_paths)
        for joined, tag in sorted(state.items()):
            redactor._add([tuple(joined.split("\x1f"))], tag)
        return redactor

    def _keyed(self, kind: str, value) -> str:
        return hmac.new(self.key, f"{self.source_id}\x00{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()

    def _add(self, forms: Iterable[tuple[str, ...]], tag: str) -> None:
        for form in forms:
            # a patient tag wins over a generic one (a birth date that is also a study date is still a date)
            if form not in self._forms or self._forms[form].startswith("[date"):
                self._forms[form] = tag
            self._longest = max(self._longest, len(form))
            glued = tag.startswith(("[patient-", "[study-", "[id]"))  # not dates/times: IM000009 is a number
            if glued and len(form) == 1 and len(form[0]) >= 4 and any(c.isdigit() for c in form[0]):
                self._embedded.setdefault(form[0], self._forms[form])

    def learn(self, identity: dict) -> None:
        if not identity:
            return
        patient = identity.get("patient")
        ptag = f"[patient-{self._keyed('patient', patient)[:8]}]" if patient else "[patient-00000000]"
        if patient:
            self._add(_short_ok(patient), ptag)
        # the older reader interface: a flat list of names and IDs
        for value in identity.get("names", []):
            self._add(name_forms(value) | _short_ok(value), ptag)
        ids = identity.get("identifiers", {})
        for value in ids.get("patient_id", []):
            self._add(_short_ok(value), ptag)
        for value in ids.get("patient_name", []):
            self._add(name_forms(value), ptag)
        for value in ids.get("study_id", []):
            self._add(_short_ok(value), f"[study-{self._keyed('study', value)[:8]}]")
        for kind, tag, forms in (
            ("id", "[id]", _short_ok),
            ("uid", "[uid]", _variants),
            ("institution", "[institution]", _variants),
            ("physician", "[physician]", name_forms),
            ("person", "[physician]", name_forms),
            ("date", "[date]", date_forms),
            ("time", "[time]", time_forms),
            ("datetime", "[date]", datetime_forms),
        ):
            for value in ids.get(kind, []):
                self._add(forms(value), tag)

    def _spans(self, component: str) -> list[tuple[int, int, str]]:
        tokens = [(m.start(), m.end(), fold(m.group())) for m in _TOKEN.finditer(component)]
        spans, i = [], 0
        while i < len(tokens):
            for n in range(min(self._longest, len(tokens) - i), 0, -1):
                tag = self._forms.get(tuple(t[2] for t in tokens[i : i + n]))
                if tag:
                    spans.append((tokens[i][0], tokens[i + n - 1][1], tag))
                    i += n
                    break
            else:
                spans += self._embedded_spans(*tokens[i])
                i += 1
        return spans

    def _embedded_spans(self, start: int, end: int, folded: str) -> list[tuple[int, int, str]]:
        """An ID with digits glued to a prefix or suffix at a letter/digit boundary: PAT4MR1, CT19610423.

        Only at such boundaries, and only for IDs of 4+ characters holding a digit, so a
        word never loses letters from its middle and a short number is never hunted.
        """
        if not self._embedded or len(folded) != end - start:
            return []
        cuts = [0] + [k for k in range(1, len(folded)) if folded[k - 1].isdigit() != folded[k].isdigit()]
        cuts.append(len(folded))
        for a in range(len(cuts) - 1):
            for b in range(len(cuts) - 1, a, -1):
                tag = self._embedded.get(folded[cuts[a] : cuts[b]])
                if tag and (a, b) != (0, len(cuts) - 1):
                    return [(start + cuts[a], start + cuts[b], tag)]
        return []

    def redact(self, text: str, tag: str | None = None) -> str:
        """``text`` with every learned identifier replaced; ``tag`` replaces all tags (key-free ids)."""
        if not self._forms or not text:
            return text
        parts = re.split(r"([/\\\s'\"])", text)
        out = []
        for part in parts:
            spans = self._spans(part) if part and part not in "/\\ '\"" else []
            if not spans:
                out.append(part)
            elif self.keyed_paths:
                out.append(self._keyed_component(part, tag))
            else:
                for start, end, found in reversed(spans):
                    part = part[:start] + (tag or found) + part[end:]
                out.append(part)
        result = "".join(out)
        if self.keyed_paths and tag is None and result != text:
            self.lookup[result] = text
        return result

    def _keyed_component(self, component: str, tag: str | None) -> str:
        stem, dot, ext = component.partition(".")
        keep = f".{ext}" if dot and ext and not self._spans(ext) else ""
        return (tag or f"k-{self._keyed('component', component)[:12]}") + keep


def _short_ok(value) -> set[tuple[str, ...]]:
    """An ID matches whole tokens only; a one-character ID ('1', 'A') is no identifier in a path."""
    return {v for v in _variants(value) if len("".join(v)) >= 2}


# -- the never-shipped lookup -----------------------------------------------------------------
def lookup_dir() -> Path:
    """Where lookups live: ``$CURATOR_LOOKUP_DIR``, else ``~/.local/share/curator/lookup``.

    Outside every corpus on purpose: nothing that copies, shards, exports or uploads
    a corpus can take it along.
    """
    env = os.environ.get("CURATOR_LOOKUP_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share") / "curator"
    return base if env else base / "lookup"


def lookup_path(corpus_url: str, source_id: str) -> Path:
    return lookup_dir() / hashlib.sha256(corpus_url.rstrip("/").encode()).hexdigest()[:16] / f"{source_id}.json"


def save_lookup(corpus_url: str, source_id: str, lookup: dict[str, str]) -> Path | None:
    if not lookup:
        return None
    path = lookup_path(corpus_url, source_id)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps({"corpus": corpus_url, "source_id": source_id, "paths": lookup}, sort_keys=True))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path


def load_lookup(corpus_url: str, source_id: str) -> dict[str, str]:
    path = lookup_path(corpus_url, source_id)
    return json.loads(path.read_text())["paths"] if path.is_file() else {}
