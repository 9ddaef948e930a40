"""Images in study folders with one free-text report per study (MIMIC-CXR and kin).

MIMIC-CXR as downloaded from PhysioNet::

    files/p10/p10000032/s50414267/02aa804e-....dcm        (MIMIC-CXR-JPG: .jpg)
    mimic-cxr-reports/files/p10/p10000032/s50414267.txt   (from mimic-cxr-reports.zip)

Each image is an item. Its study folder, relative to ``images_dir``, names the
report: ``<reports_dir>/<study folder>.txt``; ``patient_from_path`` /
``study_from_path`` take the grouping ids from the path (hashed before they are
stored). An image whose report is missing is rejected ``missing_report`` unless
``require_report`` is false. Reports are kept whole (the publisher's own
de-identification, e.g. MIMIC's ``___``, stays as it is) and, when
``sections`` is set, their FINDINGS / IMPRESSION sections are added as separate
``report`` annotations with the section named in the payload.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from pydantic import Field

from curator.adapters.base import Adapter, Item, Params, Text
from curator.errors import CardError

SECTION = re.compile(r"^\s*([A-Z][A-Z /]+):", re.MULTILINE)


class ImageReportParams(Params):
    images_dir: str = Field("files", description="Folder below the root holding the study folders.")
    reports_dir: str = Field(
        "mimic-cxr-reports/files", description="Folder below the root mirroring the study folders, one .txt per study."
    )
    extensions: list[str] = Field(default_factory=lambda: [".dcm", ".jpg", ".png"], description="Image file types.")
    patient_from_path: str | None = Field(r"(p\d+)/s\d+", description="Regex, one group: patient id from the path.")
    study_from_path: str | None = Field(r"(s\d+)$", description="Regex, one group: study id from the study folder.")
    require_report: bool = True
    sections: list[str] = Field(default_factory=lambda: ["FINDINGS", "IMPRESSION"])
    language: str = "en"


class ImageReport(Adapter):
    name = "image_report"
    version = "1"
    Params = ImageReportParams

    def items(self) -> Iterator[Item]:
        p = self.params
        base = (self.root / p.images_dir).resolve()
        if not base.is_dir():
            raise CardError(f"{self.card.id}: images folder '{p.images_dir}' not found under {self.root}")
        exts = {e.lower() for e in p.extensions}
        reports = (self.root / p.reports_dir).resolve()
        cache: dict[str, list[Text] | None] = {}
        for path in self.files(base):
            if path.suffix.lower() == ".txt" and path.resolve().is_relative_to(reports):
                continue  # reports unpacked beside the images are not inputs of their own
            item = Item(uri=self.rel(path), path=path)
            if path.suffix.lower() not in exts:
                item.reject = ("unsupported_format", f"not one of {sorted(exts)}")
                yield item
                continue
            study = path.parent.relative_to(base).as_posix()
            if study not in cache:
                cache.clear()  # files are sorted, so a study's images are consecutive
                cache[study] = self._report(study)
            texts = cache[study]
            if texts is None and p.require_report:
                item.reject = ("missing_report", f"no report {p.reports_dir}/{study}.txt")
                yield item
                continue
            item.texts = list(texts or [])
            item.patient_id = _group(p.patient_from_path, study)
            item.study_id = _group(p.study_from_path, study)
            if path.suffix.lower() == ".dcm":
                item.fmt = "dicom"
            yield item

    def _report(self, study: str) -> list[Text] | None:
        path = self.root / self.params.reports_dir / f"{study}.txt"
        if not path.is_file():
            return None
        text = path.read_text(encoding="utf-8", errors="replace").strip()
        if not text:
            return None
        lang = self.params.language
        texts = [Text("report", text, lang)]
        for name, body in split_sections(text).items():
            if name in self.params.sections and body:
                texts.append(Text("report", body, lang, {"section": name}))
        return texts


def split_sections(text: str) -> dict[str, str]:
    """Upper-case ``NAME:`` headings (FINDINGS:, IMPRESSION:) to their text, whitespace collapsed."""
    marks = list(SECTION.finditer(text))
    out: dict[str, str] = {}
    for m, nxt in zip(marks, [*marks[1:], None], strict=True):
        body = text[m.end() : nxt.start() if nxt else len(text)]
        out[m.group(1).strip()] = " ".join(body.split())
    return out


def _group(pattern: str | None, text: str) -> str | None:
    if not pattern:
        return None
    m = re.search(pattern, text)
    return m.group(1) if m else None
