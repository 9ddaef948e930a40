"""Open-i Indiana University chest X-ray collection: XML reports naming their images.

As downloaded from https://openi.nlm.nih.gov/faq (NLMCXR_reports.tgz, NLMCXR_png.tgz)::

    ecgen-radiology/1.xml        one report per study; <parentImage id="CXR1_1_IM-0001-3001"> per image
    NLMCXR_png/CXR1_1_IM-0001-3001.png

Each image a report names is an item, carrying the report's FINDINGS and
IMPRESSION (the INDICATION and COMPARISON sections are left out: they are
where the publisher's ``XXXX`` de-identification sits thickest and they describe
the request, not the image). MeSH ``major`` terms become labels (the first term
of ``Cardiomegaly/borderline``; the vocabulary maps ``normal`` to no finding). A report that
names no image, or that is not well-formed XML, is one reject.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator

from pydantic import Field

from curator.adapters.base import Adapter, Item, Label, Params, Text
from curator.errors import CardError, ReadError


class OpeniReportsParams(Params):
    reports_dir: str = Field("ecgen-radiology", description="Folder of the XML reports, below the root.")
    images_dir: str = Field("NLMCXR_png", description="Folder of the images the reports name, below the root.")
    image_suffix: str = Field(".png", description="Appended to parentImage ids.")
    sections: list[str] = Field(
        default_factory=lambda: ["FINDINGS", "IMPRESSION"], description="Report sections kept as report texts."
    )
    mesh_labels: bool = Field(True, description="Turn MeSH major terms into labels.")


class OpeniReports(Adapter):
    name = "openi_reports"
    version = "1"
    rows_repeat = True
    Params = OpeniReportsParams

    def items(self) -> Iterator[Item]:
        p = self.params
        folder = self.root / p.reports_dir
        if not folder.is_dir():
            raise CardError(f"{self.card.id}: reports folder '{p.reports_dir}' not found under {self.root}")
        for xml in self.files(folder):
            uri = self.rel(xml)
            if xml.suffix.lower() != ".xml":
                yield Item(uri=uri, reject=("unsupported_format", "not an XML report"))
                continue
            try:
                root = ET.parse(xml).getroot()
            except ET.ParseError as exc:
                yield Item(uri=uri, reject=("corrupt", f"report XML: {exc}"))
                continue
            images = [e.get("id") for e in root.iter("parentImage") if e.get("id")]
            if not images:
                yield Item(uri=uri, reject=("no_pixels", "report names no image"))
                continue
            texts, labels = self._report(root)
            for image_id in images:
                name = f"{image_id}{p.image_suffix}"
                yield self._item(f"{p.images_dir}/{name}" if p.images_dir else name, xml, texts, labels)

    def _item(self, rel: str, xml, texts: list[Text], labels: list[Label]) -> Item:
        item = Item(uri=rel, texts=texts, labels=labels, patient_id=xml.stem, study_id=xml.stem)
        try:
            item.path = self.resolve(rel)
            item.uri = self.rel(item.path)
        except ReadError as exc:
            item.reject = (exc.reason, f"{self.rel(xml)}: {exc.message}")
        return item

    def _report(self, root: ET.Element) -> tuple[list[Text], list[Label]]:
        sections = {}
        for node in root.iter("AbstractText"):
            label = (node.get("Label") or "").upper()
            body = " ".join("".join(node.itertext()).split())
            if label in self.params.sections and body:
                sections[label] = body
        texts = []
        if sections:
            whole = "\n".join(f"{k}: {v}" for k, v in sections.items())
            texts.append(Text("report", whole, "en"))
            texts += [Text("report", v, "en", {"section": k}) for k, v in sections.items()]
        labels: list[Label] = []
        if self.params.mesh_labels:
            seen = set()
            for node in root.iter("major"):
                term = (node.text or "").split("/")[0].strip()
                if term and term.lower() not in seen:
                    seen.add(term.lower())
                    labels.append(Label(term))
        return texts, labels
