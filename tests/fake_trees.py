"""Fake dataset trees mirroring each adapter's native layout, driven by a card's adapter parameters.

One builder per adapter: give it a card and a folder and it writes a few real images
where that card's layout expects them, plus the traps a real download has (a row
naming a missing file, a path escaping the root, a corrupt image, a file where the
layout expects none). A new card is tested the moment it is written.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from dicom_fixtures import make_dicom
from media_fixtures import CODECS, break_tile, write_slide, write_video
from PIL import Image

from curator.adapters.base import Adapter


def write_image(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (24, 32), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in CODECS:  # a two-second video, one image per second
        return write_video(path, seconds=2, seed=seed)
    if suffix in (".tif", ".tiff", ".svs"):  # a small pyramidal slide scanned at 10x (1 um/px)
        return write_slide(path, size=(1536, 1024), mpp=1.0, seed=seed)
    if suffix == ".dcm":
        return make_dicom(path, arr.astype(np.uint16) * 16, modality="DX", patient_id=f"PID{seed:05d}")
    Image.fromarray(arr).save(path, format="JPEG" if suffix in (".jpg", ".jpeg") else "PNG")
    return path


def write_corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    return path


def _labels(params) -> list[str]:
    return list(getattr(params, "known_labels", None) or []) or ["Effusion", "Cardiomegaly"]


def class_folders(adapter: Adapter, root: Path) -> None:
    p = adapter.params
    base = root / p.subdir
    values = {"modality": "CT", "anatomy": "abd", "split": "train", "patient": "p001", "ignore": "misc"}
    suffix = p.extensions[0] if p.extensions else ".png"  # a video or slide set's own files
    for i, label in enumerate(_labels(p)[:2]):
        parts = [label if level == "label" else values[level] for level in p.levels]
        for j in range(2):
            write_image(base.joinpath(*parts, f"img{i}{j}{suffix}"), seed=10 * i + j)
    write_image(base / f"stray{suffix}", seed=99)  # above the class folders: bad_layout
    first = base.joinpath(*[_labels(p)[0] if lv == "label" else values[lv] for lv in p.levels])
    write_corrupt(first / "bad.jpg")
    if suffix in CODECS:  # a video cut short: its first second indexed, the rest a frames_lost reject
        cut = write_image(first / f"cut{suffix}", seed=7)
        cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 6 // 10])
    elif suffix in (".tif", ".tiff", ".svs"):  # a slide with one broken stored tile, in the tissue, on each level
        slide = write_image(first / f"broken{suffix}", seed=7)
        for level, index in ((0, 6 + 1), (1, 3 + 1)):  # stored tile (1, 1) of levels 0 and 1
            break_tile(slide, index=index, level=level)


def label_csv(adapter: Adapter, root: Path) -> None:
    p = adapter.params
    labels = _labels(p)
    if p.image_search:
        image_folder = root / p.image_search[0].replace("*", "001")
    else:
        image_folder = root / p.image_dir if p.image_dir else root
    rows, names = [], []
    for i in range(4):
        name = f"patient{i:05d}/study1/view1_frontal.jpg" if not p.image_search else f"{i:08d}_000.png"
        stored = name.removesuffix(p.image_suffix) if p.image_suffix else name
        if p.image_suffix:
            name = f"{stored}{p.image_suffix}" if not stored.endswith(p.image_suffix) else stored
        write_image(image_folder / name if not p.image_search else image_folder / name.rsplit("/", 1)[-1], seed=i)
        row = {p.path_column: f"{p.strip_prefix}{stored}"}
        if p.label_column:
            row[p.label_column] = p.separator.join(labels[: 1 + i % 2])
        for k, col in enumerate(p.label_columns):
            row[col] = ["1.0", "0.0", "-1.0", ""][(i + k) % 4]
        if p.patient_column:
            row[p.patient_column] = f"{i // 2:05d}"
        rows.append(row)
        names.append(name.rsplit("/", 1)[-1])
    bad = [f"{p.strip_prefix}missing/none.jpg", "../../etc/passwd", ""]
    for b in bad:
        row = dict(rows[0])
        row[p.path_column] = b
        rows.append(row)
    if p.label_column and p.known_labels:
        row = dict(rows[1])
        row[p.label_column] = "Not A Finding"
        rows.append(row)
    columns = list(rows[0])
    for n, table in enumerate(p.csv):
        path = root / table
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows if n == 0 else rows[:1])
    lists = list(p.split_lists)
    for n, name in enumerate(lists):
        (root / name).write_text("\n".join(names[n::2]) + "\n")


def _nest(dotted: str, value) -> dict:
    """``conversations.1.value`` -> {"conversations": [{}, {"value": value}]}."""
    parts = dotted.split(".")
    if len(parts) == 1:
        return {dotted: value}
    head, *rest = parts
    if rest[0].isdigit():
        n = int(rest[0])
        inner = _nest(".".join(rest[1:]), value) if len(rest) > 1 else value
        return {head: [{"from": "human", "value": "<image>\nDescribe."}] * n + [inner]}
    return {head: _nest(".".join(rest), value)}


def image_text(adapter: Adapter, root: Path) -> None:
    p = adapter.params
    for t, table in enumerate(p.tables or ["pairs.jsonl"]):
        folder = p.image_dirs.get(table, p.image_dir)
        rows = []
        for i in range(3):
            name = f"img_{t}_{i}"
            write_image(root / folder / f"{name}{p.image_suffix or '.jpg'}", seed=100 * t + i)
            row = {p.image_column: name if p.image_suffix else f"{name}.jpg"}
            row.update(_nest(p.text_column, f"<image> Axial CT {i} of the chest. " if p.strip_text else f"Caption {i}"))
            if p.split_column:
                row[p.split_column] = "train"
            if p.kind == "vqa":
                row[p.answer_column or "answer"] = ["yes", "left lung", "CT"][i]
            if p.language_column:
                row[p.language_column] = ["en", "zh", "en"][i]
            rows.append(row)
        rows.append({**rows[0], **_nest(p.text_column, "A second caption for the same image.")})
        rows.append({**rows[0], p.image_column: "../../etc/passwd"})
        rows.append({**rows[0], p.image_column: "no_such_image.jpg"})
        rows.append({**rows[1], **_nest(p.text_column, "")})
        path = root / table
        path.parent.mkdir(parents=True, exist_ok=True)
        if table.endswith(".json"):
            path.write_text(json.dumps(rows))
        elif table.endswith((".jsonl", ".ndjson")):
            path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n{broken\n")
        else:
            flat = [{k: v for k, v in r.items() if not isinstance(v, list | dict)} for r in rows]
            with open(path, "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(flat[0]))
                writer.writeheader()
                writer.writerows(flat)


def image_report(adapter: Adapter, root: Path) -> None:
    p = adapter.params
    ext = p.extensions[0]
    studies = ["p10/p10000032/s50414267", "p10/p10000032/s53189527", "p11/p11000011/s51234567"]
    for i, study in enumerate(studies):
        for j in range(2):
            write_image(root / p.images_dir / study / f"{i}{j}abcdef-0000{ext}", seed=10 * i + j)
        if i < 2:  # the last study has no report: missing_report
            report = root / p.reports_dir / f"{study}.txt"
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(
                "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n"
                f" FINDINGS:  Study {i}: no focal consolidation.\n\n IMPRESSION:  No acute process.\n"
            )
    (root / p.images_dir / studies[0] / "index.html").write_text("<html></html>")


def openi_reports(adapter: Adapter, root: Path) -> None:
    p = adapter.params
    reports = root / p.reports_dir
    reports.mkdir(parents=True, exist_ok=True)
    for n, images in enumerate([["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"], ["CXR2_1_IM-0652-1001"]], start=1):
        for k, image in enumerate(images):
            if n == 1:  # report 2 names an image that is not there
                write_image(root / p.images_dir / f"{image}{p.image_suffix}", seed=k)
        parents = "".join(
            f'<parentImage id="{i}"><figureId>F{k}</figureId></parentImage>' for k, i in enumerate(images)
        )
        (reports / f"{n}.xml").write_text(
            f'<eCitation><uId id="CXR{n}"/><MedlineCitation><Article><Abstract>'
            '<AbstractText Label="INDICATION">XXXX-year-old with cough</AbstractText>'
            '<AbstractText Label="FINDINGS">The heart is normal in size.</AbstractText>'
            '<AbstractText Label="IMPRESSION">No acute disease.</AbstractText>'
            f"</Abstract></Article></MedlineCitation><MeSH><major>Cardiomegaly/borderline</major>"
            f"<major>normal</major></MeSH>{parents}</eCitation>"
        )
    (reports / "3.xml").write_text("<eCitation><unclosed>")
    (reports / "4.xml").write_text("<eCitation><MeSH><major>normal</major></MeSH></eCitation>")


def nifti_volumes(adapter: Adapter, root: Path) -> None:
    p = adapter.params
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    training = []
    for i in range(2):
        vol = rng.normal(0, 300, (40, 32, 6)).astype(np.float32)
        mask = np.zeros(vol.shape, np.uint8)
        mask[10:20, 8:16, 2:4] = 1
        mask[12:14, 9:11, 2] = 2
        affine = np.diag([0.8, 0.8, 2.5, 1.0])
        nib.save(nib.Nifti1Image(vol, affine), str(root / f"imagesTr/case_{i}.nii.gz"))
        nib.save(nib.Nifti1Image(mask, affine), str(root / f"labelsTr/case_{i}.nii.gz"))
        training.append({"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz"})
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 6), np.uint8), np.eye(4)), str(root / "labelsTr/case_bad.nii.gz"))
    nib.save(
        nib.Nifti1Image(rng.normal(size=(40, 32, 6)).astype(np.float32), np.eye(4)),
        str(root / "imagesTr/case_bad.nii.gz"),
    )
    training.append({"image": "./imagesTr/case_bad.nii.gz", "label": "./labelsTr/case_bad.nii.gz"})  # mask_mismatch
    training.append({"image": "./imagesTr/case_9.nii.gz", "label": "./labelsTr/case_9.nii.gz"})  # missing
    meta = {
        "name": "Fake",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "liver", "2": "cancer"},
        "training": training,
        "test": [],
    }
    (root / p.dataset_json).write_text(json.dumps(meta))


def dicom_folder(adapter: Adapter, root: Path) -> None:
    base = root / adapter.params.subdir
    for i in range(2):
        make_dicom(
            base / f"PID{i:05d}" / "STUDY1" / f"IM{i:06d}",
            np.arange(64, dtype=np.uint16).reshape(8, 8) * (i + 1),
            modality="CT",
            patient_id=f"PID{i:05d}",
            RescaleSlope=1,
            RescaleIntercept=-1024,
        )
    (base / "DICOMDIR_README.txt").write_text("not a DICOM file")


BUILDERS = {
    "class_folders": class_folders,
    "label_csv": label_csv,
    "image_text": image_text,
    "image_report": image_report,
    "openi_reports": openi_reports,
    "nifti_volumes": nifti_volumes,
    "dicom_folder": dicom_folder,
}

# Parameters a generic adapter needs when run with --adapter and no card.
GENERIC_PARAMS = {
    "class_folders": {"levels": ["split", "label"]},
    "label_csv": {"csv": ["labels.csv"], "path_column": "path", "label_column": "labels"},
    "image_text": {},  # tables discovered in the root
    "image_report": {"images_dir": "files", "reports_dir": "reports", "extensions": [".png"]},
    "openi_reports": {},
    "nifti_volumes": {},
    "dicom_folder": {},
}
