"""Fake dataset trees mirroring each adapter's native layout, driven by a card's adapter parameters.

One builder per adapter: give it a card and a folder and it writes a few real images
where that card's layout expects them, plus the traps a real download has (a row
naming a missing file, a path escaping the root, a corrupt image, a file where the
layout expects none). A new card is tested the moment it is written.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import re
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
    if suffix in (".dcm", ".dicom"):
        return make_dicom(path, arr.astype(np.uint16) * 16, modality="DX", patient_id=f"PID{seed:05d}")
    Image.fromarray(arr).save(path, format="JPEG" if suffix in (".jpg", ".jpeg") else "PNG")
    return path


def write_corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    return path


def _labels(params) -> list[str]:
    known = list(getattr(params, "known_labels", None) or []) or list(getattr(params, "label_map", None) or {})
    return known or ["Effusion", "Cardiomegaly"]


def _folder_for(p, label: str) -> str:
    """A folder name that the card's label_pattern reads as the label ('01_TUMOR', 'study1_positive')."""
    if not getattr(p, "label_pattern", None):
        return label
    for candidate in (label, f"1_{label}", f"01_{label}", f"study1_{label}", f"{label}_suffix"):
        m = re.search(p.label_pattern, candidate)
        if m and m.group(1) == label:
            return candidate
    return label


def class_folders(adapter: Adapter, root: Path) -> None:
    p = adapter.params
    base = root / p.subdir
    values = {"modality": "CT", "anatomy": "abd", "split": "train", "patient": "p001", "ignore": "misc"}
    suffix = p.extensions[0] if p.extensions else ".png"  # a video or slide set's own files
    for n, level in enumerate(p.levels):  # a folder the card's include globs name literally
        literal = [
            g.split("/")[n] for g in p.include if len(g.split("/")) > n and not set("*?[") & set(g.split("/")[n])
        ]
        if level == "ignore" and literal:
            values["ignore"] = literal[0]
    for i, label in enumerate(_labels(p)[:2]):
        label = _folder_for(p, label)
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
        image_folder = root / re.sub(r"\[(.)[^\]]*\]", r"\1", p.image_search[0]).replace("*", "001")
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
        if p.split_column:
            row[p.split_column] = next(iter(p.value_maps.get("split", {})), "train")
        for column in (p.modality_column, p.anatomy_column):
            if column:
                row[column] = "CT"
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
    shared = [spec for spec in p.boxes if any(fnmatch.fnmatch(t, spec.table) for t in p.csv)]
    for spec in shared:  # boxes in the label table itself (VinDr-SpineXR)
        for row in rows:
            row.update(dict(zip(spec.columns, [1, 2, 5, 4], strict=True)))
            row.setdefault(spec.label_column, labels[0])
    columns = list(rows[0])
    for spec in [b for b in p.boxes if b not in shared]:
        _csv(
            root / spec.table.replace("*", ""),
            [spec.image_column, spec.label_column, *spec.columns],
            [[names[0].removesuffix(p.image_suffix) if p.image_suffix else names[0], labels[0], 1, 2, 5, 4]],
        )
    for n, table in enumerate(p.csv):
        path = root / table.replace("*", "")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as fh:
            if p.columns:  # a table without a header line (DDR's 'name grade' lists)
                writer = csv.DictWriter(fh, fieldnames=p.columns, delimiter=p.delimiter, extrasaction="ignore")
            else:
                writer = csv.DictWriter(fh, fieldnames=columns, delimiter=p.delimiter)
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


def nifti_folder(adapter: Adapter, root: Path) -> None:
    """A tree of volumes without dataset.json, masks by the card's templates, plus macOS junk."""
    p = adapter.params
    base = root / p.subdir
    rng = np.random.default_rng(1)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    template = p.masks[0] if p.masks else None
    pattern = p.include[0] if p.include else "*/case.nii.gz"
    for i in range(2):
        name = pattern.replace("*", f"case_{i}")
        name = name if name.endswith((".nii", ".nii.gz")) else f"{name}.nii.gz"
        image = base / name if "/" in name else base / f"patient{i}" / name
        image.parent.mkdir(parents=True, exist_ok=True)
        vol = rng.normal(0, 300, (40, 32, 6)).astype(np.float32)
        nib.save(nib.Nifti1Image(vol, affine), str(image))
        if template:
            mask = np.zeros(vol.shape, np.uint8)
            mask[10:20, 8:16, :] = 1
            mask[30:34, 20:24, :] = 1  # a second component on every slice
            stem = image.name.removesuffix(".nii.gz")
            mask_stem = stem
            for old, new in p.mask_stem_replace.items():
                mask_stem = mask_stem.replace(old, new)
            named = template.format(stem=stem, name=image.name, ext=".nii.gz", mask_stem=mask_stem)
            target = image.parent / named.replace("*", f"case_{i}")
            target.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(mask, affine), str(target))
        (image.parent / f"._{image.name}").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
        (image.parent / f"case_{i}.json").write_text("{}")
    (base / "README.pdf.nii").write_bytes(b"not a volume")  # corrupt
    trap = pattern.replace("*", "case_bad")
    trap = base / (trap if trap.endswith((".nii", ".nii.gz")) else f"{trap}.nii.gz")
    trap.parent.mkdir(parents=True, exist_ok=True)
    trap.write_bytes(b"\x1f\x8b truncated gzip")  # a volume the card reads, but damaged
    (base / "notes.bin").write_bytes(b"x")  # unsupported_format


def dicom_folder(adapter: Adapter, root: Path) -> None:
    base = root / adapter.params.subdir
    for i in range(2):
        make_dicom(
            base / f"PID{i:05d}" / "STUDY1" / f"IM{i:06d}",
            np.arange(64, dtype=np.uint16).reshape(8, 8) * 4 * (i + 1) + 1000,  # HU -24..228: seen in any window
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
    "nifti_folder": nifti_folder,
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
    "nifti_folder": {"masks": ["{stem}_seg{ext}"], "mask_values": {1: "tumour"}},
    "dicom_folder": {},
}


# -- the datasets as distributed -------------------------------------------------------------
# One builder per named card, written from the dataset's own documentation (file names,
# folder nesting, table columns and the junk the archives carry), so a card that no longer
# matches today's download fails here. The contract test uses these instead of the
# parameter-driven builders above.


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _mask(path: Path, boxes: list[tuple[int, int, int, int]], shape=(24, 32)) -> Path:
    arr = np.zeros(shape, np.uint8)
    for x0, y0, x1, y1 in boxes:
        arr[y0:y1, x0:x1] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _apple_double(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")


def busi_tree(root: Path) -> Path:
    """Dataset_BUSI_with_GT/<class>/'<class> (n).png' + '<class> (n)_mask.png' (+ '_mask_1')."""
    base = root / "Dataset_BUSI_with_GT"
    for c, cls in enumerate(["benign", "malignant", "normal"]):
        for n in (1, 2):
            write_image(base / cls / f"{cls} ({n}).png", seed=10 * c + n)
            boxes = [] if cls == "normal" else [(2, 2, 8, 6), (20, 10, 30, 20)] if n == 1 else [(4, 4, 9, 9)]
            _mask(base / cls / f"{cls} ({n})_mask.png", boxes)
    _mask(base / "benign" / "benign (2)_mask_1.png", [(12, 12, 16, 18)])  # a second lesion's mask
    _mask(base / "malignant" / "malignant (9)_mask.png", [(1, 1, 3, 3)])  # a mask without its image
    _mask(base / "benign" / "benign (3).png", [(0, 0, 4, 4)], shape=(10, 10))  # image ...
    _mask(base / "benign" / "benign (3)_mask.png", [(0, 0, 4, 4)], shape=(12, 12))  # ... whose mask differs
    _apple_double(base / "benign" / "._benign (1).png")
    (base / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return base


def brain_tumor_mri_tree(root: Path) -> Path:
    """Training/<class>/Tr-<cc>_NNNN.jpg and Testing/<class>/Te-<cc>_NNNN.jpg (Kaggle, Nickparvar)."""
    for s, (split, prefix) in enumerate([("Training", "Tr"), ("Testing", "Te")]):
        for c, (cls, cc) in enumerate([("glioma", "gl"), ("meningioma", "me"), ("notumor", "no"), ("pituitary", "pi")]):
            write_image(root / split / cls / f"{prefix}-{cc}_{c:04d}.jpg", seed=100 * s + c)
    write_corrupt(root / "Training" / "glioma" / "Tr-gl_9999.jpg")
    write_image(root / "Training" / "stray.jpg", seed=7)  # bad_layout
    return root


def aptos2019_tree(root: Path) -> Path:
    """train.csv (id_code, diagnosis), test.csv (id_code), train_images/, test_images/."""
    train = [[f"{i:03x}c0ffee{i}", str(i % 5)] for i in range(5)]
    test = [[f"{i:03x}feed{i}"] for i in range(2)]
    for n, (code, _) in enumerate(train):
        write_image(root / "train_images" / f"{code}.png", seed=n)
    for n, (code,) in enumerate(test):
        write_image(root / "test_images" / f"{code}.png", seed=50 + n)
    _csv(root / "train.csv", ["id_code", "diagnosis"], [*train, ["missing0", "2"], ["000c0ffee0", "7"]])
    _csv(root / "test.csv", ["id_code"], test)
    _csv(root / "sample_submission.csv", ["id_code", "diagnosis"], [[c, 0] for (c,) in test])
    return root


def ham10000_tree(root: Path) -> Path:
    """HAM10000_metadata.csv + HAM10000_images_part_1/ and _part_2/ (ISIC_XXXXXXX.jpg)."""
    header = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
    rows = []
    for i, dx in enumerate(["bkl", "bkl", "mel", "nv", "vasc"]):
        image = f"ISIC_{24306 + i:07d}"
        write_image(root / f"HAM10000_images_part_{1 + i % 2}" / f"{image}.jpg", seed=i)
        rows.append([f"HAM_{i // 2:07d}", image, dx, "histo", "80.0", "male", "scalp"])
    rows += [["HAM_0009999", "ISIC_0099999", "nv", "follow_up", "45.0", "female", "back"]]  # missing image
    rows += [["HAM_0009998", "ISIC_0024306", "xyz", "histo", "45.0", "female", "back"]]  # unknown label
    _csv(root / "HAM10000_metadata.csv", header, rows)
    _csv(root / "hmnist_28_28_L.csv", ["pixel0000", "label"], [[0, 2]])
    return root


def nih_chestxray14_tree(root: Path) -> Path:
    """Data_Entry_2017_v2020.csv, BBox_List_2017.csv, train_val_list.txt, test_list.txt, images_00N/images/."""
    header = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender"]
    header += ["View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]
    labels = ["No Finding", "Cardiomegaly|Effusion", "Infiltration", "Atelectasis", "No Finding"]
    rows = []
    for i, lab in enumerate(labels):
        name = f"{i + 1:08d}_000.png"
        write_image(root / f"images_{1 + i // 3:03d}" / "images" / name, seed=i)
        rows.append([name, lab, 0, i + 1, 58, "M", "PA", 2682, 2749, 0.143, 0.143])
    rows.append(["00099999_000.png", "Mass", 0, 99999, 40, "F", "PA", 2048, 2500, 0.168, 0.168])  # missing
    rows.append(["00000001_000.png", "Not A Finding", 1, 1, 58, "M", "PA", 2682, 2749, 0.143, 0.143])
    _csv(root / "Data_Entry_2017_v2020.csv", header, rows)
    bbox = root / "BBox_List_2017.csv"
    bbox.write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
        "00000003_000.png,Infiltrate,2.5,3.0,10.0,8.0,,,\n"
        "00000002_000.png,Cardiomegaly,4,5,20,12,,,\n"
    )
    (root / "train_val_list.txt").write_text("".join(f"{i:08d}_000.png\n" for i in (1, 2, 3)))
    (root / "test_list.txt").write_text("".join(f"{i:08d}_000.png\n" for i in (4, 5)))
    (root / "README_CHESTXRAY.pdf").write_bytes(b"%PDF-1.4")
    return root


def slake_tree(root: Path) -> Path:
    """Slake1.0/{train,validate,test}.json + imgs/xmlab<N>/{source.jpg,mask.png,detection.json,question.json}."""
    base = root / "Slake1.0"
    rows = {"train.json": [], "validate.json": [], "test.json": []}
    kinds = [("CT", "Abdomen"), ("MRI", "Brain_Tissue"), ("X-Ray", "Lung")]
    for i, (modality, location) in enumerate(kinds):
        folder = base / "imgs" / f"xmlab{i}"
        write_image(folder / "source.jpg", seed=i)
        _mask(folder / "mask.png", [(3, 3, 9, 9), (15, 5, 25, 15)])
        (folder / "detection.json").write_text(json.dumps([{"Liver": [3, 3, 6, 6]}, {"Spleen": [15, 5, 10, 10]}]))
        (folder / "question.json").write_text("[]")
        table = list(rows)[i]
        for q, (question, answer, lang) in enumerate(
            [("Which organ is abnormal?", "Liver", "en"), ("图中哪个器官不正常？", "肝脏", "zh")]
        ):
            rows[table].append(
                {
                    "img_id": i,
                    "img_name": f"xmlab{i}/source.jpg",
                    "question": question,
                    "answer": answer,
                    "q_lang": lang,
                    "location": location,
                    "modality": modality,
                    "answer_type": "OPEN",
                    "base_type": "vqa",
                    "content_type": "Organ",
                    "triple": ["vhead", "_", "_"],
                    "qid": 10 * i + q,
                }
            )
    rows["train.json"].append({**rows["train.json"][0], "img_name": "xmlab77/source.jpg", "qid": 999})  # missing
    for table, content in rows.items():
        (base / table).write_text(json.dumps(content, ensure_ascii=False))
    (base / "KG").mkdir()
    (base / "KG" / "en_organ.csv").write_text("head#rel#tail\n")
    return base


def vqa_rad_tree(root: Path) -> Path:
    """'VQA_RAD Dataset Public.json' (qid, phrase_type, image_name, image_organ, question, answer, ...)."""
    images = root / "VQA_RAD Image Folder"
    for i in range(3):
        write_image(images / f"synpic{54610 + i}.jpg", seed=i)

    def q(qid, phrase, image, organ, question, answer):
        return {
            "qid": qid,
            "phrase_type": phrase,
            "qid_linked_id": f"0{qid}",
            "image_case_url": f"https://medpix.nlm.nih.gov/case?id={qid}",
            "image_name": image,
            "image_organ": organ,
            "evaluation": "evaluated",
            "question": question,
            "question_rephrase": "NULL",
            "question_relation": "NULL",
            "question_frame": "NULL",
            "question_type": "PRES",
            "answer": answer,
            "answer_type": "CLOSED",
        }

    rows = [
        q(1, "freeform", "synpic54610.jpg", "HEAD", "Is there an infarct?", "yes"),
        q(2, "test_freeform", "synpic54610.jpg", "HEAD", "Is the lesion hyperdense?", "no"),  # same image, test
        q(3, "para", "synpic54611.jpg", "CHEST", "Is the heart enlarged?", "yes"),
        q(4, "test_para", "synpic54612.jpg", "ABD", "Where is the mass?", "liver"),
        q(5, "freeform", "synpic99999.jpg", "ABD", "Is there free air?", "no"),  # missing image
    ]
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(rows))
    (root / "VQA_RAD Dataset Public.xml").write_text("<root/>")
    return root


def rocov2_tree(root: Path) -> Path:
    """<split>_captions.csv (ID, Caption), <split>_concepts_manual.csv (ID, CUIs), <split>/<ID>.jpg."""
    cuis = ["C0040405;C0817096", "C1306645", "C0024485;C0006141"]
    for s, split in enumerate(["train", "valid", "test"]):
        caps, concepts = [], []
        for i in range(2):
            rid = f"ROCOv2_2023_{split}_{i + 1:06d}"
            write_image(root / split / f"{rid}.jpg", seed=10 * s + i)
            caps.append([rid, f"Head CT of case {i} showing a {split} finding."])
            concepts.append([rid, cuis[(s + i) % 3]])
        caps.append([f"ROCOv2_2023_{split}_999999", "An image that is not in the archive."])
        _csv(root / f"{split}_captions.csv", ["ID", "Caption"], caps)
        _csv(root / f"{split}_concepts_manual.csv", ["ID", "CUIs"], concepts)
        _csv(root / f"{split}_concepts.csv", ["ID", "CUIs"], concepts)
    _csv(root / "cui_mapping.csv", ["CUI", "Canonical name"], [["C0040405", "X-Ray Computed Tomography"]])
    return root


def pmc_oa_tree(root: Path) -> Path:
    """pmc_oa.jsonl ({image, caption, ...}), images.zip unpacked to caption_T060_filtered_top4_sep_v0_subfigures/."""
    folder = root / "caption_T060_filtered_top4_sep_v0_subfigures"
    rows = []
    for i in range(3):
        name = f"PMC{212000 + i}_F{i}_{i}.jpg"
        write_image(folder / name, seed=i)
        rows.append({"image": name, "caption": f"Micrograph {i} of renal tissue.", "alignment_type": "ChatGPT"})
    rows.append({"image": "PMC0_missing.jpg", "caption": "gone"})
    rows.append({"image": "../../escape.jpg", "caption": "escape"})
    (root / "pmc_oa.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


def msd_spleen_tree(root: Path) -> Path:
    """Task09_Spleen/ with dataset.json, imagesTr/, labelsTr/, imagesTs/ and the tarball's '._*' files."""
    base = root / "Task09_Spleen"
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    affine = np.diag([0.8, 0.8, 5.0, 1.0])
    training = []
    for n in (2, 3):
        vol = rng.normal(40, 200, (40, 32, 6)).astype(np.float32)
        mask = np.zeros(vol.shape, np.uint8)
        mask[10:20, 8:16, 2:4] = 1
        mask[30:34, 20:24, 2] = 1  # a second spleen component (splenule) on slice 2
        nib.save(nib.Nifti1Image(vol, affine), str(base / f"imagesTr/spleen_{n}.nii.gz"))
        nib.save(nib.Nifti1Image(mask, affine), str(base / f"labelsTr/spleen_{n}.nii.gz"))
        _apple_double(base / f"imagesTr/._spleen_{n}.nii.gz")
        training.append({"image": f"./imagesTr/spleen_{n}.nii.gz", "label": f"./labelsTr/spleen_{n}.nii.gz"})
    training.append({"image": "./imagesTr/spleen_4.nii.gz", "label": "./labelsTr/spleen_4.nii.gz"})  # missing
    nib.save(
        nib.Nifti1Image(rng.normal(size=(40, 32, 6)).astype(np.float32), affine), str(base / "imagesTs/spleen_1.nii.gz")
    )
    meta = {
        "name": "Spleen",
        "description": "Spleen Segmentation",
        "reference": "Memorial Sloan Kettering Cancer Center",
        "licence": "CC-BY-SA 4.0",
        "release": "1.0 06/08/2018",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "spleen"},
        "numTraining": len(training),
        "numTest": 1,
        "training": training,
        "test": ["./imagesTs/spleen_1.nii.gz"],
    }
    (base / "dataset.json").write_text(json.dumps(meta, indent=4))
    return base


def shenzhen_cxr_tree(root: Path) -> Path:
    """ChinaSet_AllFiles/CXR_png/CHNCXR_<nnnn>_<0|1>.png and ClinicalReadings/*.txt."""
    base = root / "ChinaSet_AllFiles"
    for n in range(4):
        write_image(base / "CXR_png" / f"CHNCXR_{n + 1:04d}_{n % 2}.png", seed=n)
        (base / "ClinicalReadings").mkdir(parents=True, exist_ok=True)
        (base / "ClinicalReadings" / f"CHNCXR_{n + 1:04d}_{n % 2}.txt").write_text("male 45yrs\nnormal\n")
    write_image(base / "CXR_png" / "CHNCXR_0099.png", seed=9)  # no label digit: unknown_label
    (base / "CXR_png" / "Thumbs.db").write_bytes(b"\x00" * 8)
    return base


def montgomery_cxr_tree(root: Path) -> Path:
    """MontgomerySet/CXR_png/MCUCXR_<nnnn>_<0|1>.png + ManualMask/{leftMask,rightMask}/ of the same name."""
    base = root / "MontgomerySet"
    for n in range(3):
        name = f"MCUCXR_{n + 1:04d}_{n % 2}.png"
        write_image(base / "CXR_png" / name, seed=n)
        _mask(base / "ManualMask" / "leftMask" / name, [(2, 2, 12, 20)])
        _mask(base / "ManualMask" / "rightMask" / name, [(18, 2, 28, 20)])
    _mask(base / "ManualMask" / "leftMask" / "MCUCXR_0099_1.png", [(2, 2, 4, 4)])  # mask without image
    (base / "NLM-MontgomeryCXRSet-ReadMe.pdf").write_bytes(b"%PDF")
    return base


def fives_tree(root: Path) -> Path:
    """{train,test}/Original/<n>_<A|D|G|N>.png with vessel masks in {train,test}/Ground truth/."""
    for s_, split in enumerate(["train", "test"]):
        for n, cat in enumerate("ADGN"):
            name = f"{n + 1 + 10 * s_}_{cat}.png"
            write_image(root / split / "Original" / name, seed=10 * s_ + n)
            _mask(root / split / "Ground truth" / name, [(1, 1, 30, 3), (1, 20, 30, 22)])
    write_image(root / "train" / "Original" / "99_X.png", seed=99)  # unknown category
    return root


def jsiec_1000_tree(root: Path) -> Path:
    """1000images/<n.n.Category>/*.jpg (one folder per category)."""
    base = root / "1000images"
    for n, folder in enumerate(["0.0.Normal", "1.0.DR1", "29.1.Blur fundus with suspected PDR"]):
        write_image(base / folder / f"{n}.jpg", seed=n)
    write_image(base / "stray.jpg", seed=5)  # above the category folders
    write_corrupt(base / "0.0.Normal" / "bad.jpg")
    return base


def _jpeg_bytes(seed: int) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _nii(path: Path, vol: np.ndarray, affine=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.8, 2.5, 1.0]) if affine is None else affine), str(path))
    return path


def pathvqa_tree(root: Path) -> Path:
    """data/<split>-00000-of-00001.parquet: image {bytes, path} (JPEG inside the table), question, answer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for s, split in enumerate(["train", "validation", "test"]):
        images = [{"bytes": _jpeg_bytes(10 * s + i), "path": None} for i in range(2)]
        rows = [
            (images[0], "what does this image show?", "necrosis"),
            (images[0], "is there inflammation?", "yes"),  # a second question about the same image
            (images[1], "where is the lesion?", "liver"),
        ]
        if split == "train":
            rows += [
                (None, "what is missing?", "the image"),  # an empty image cell: bad_row
                ({"bytes": b"\xff\xd8\xff\xe0 not a jpeg", "path": None}, "what is this?", "noise"),  # corrupt
                (images[1], "is this benign?", ""),  # an empty answer: bad_row
            ]
        table = pa.table(
            {
                "image": pa.array([r[0] for r in rows], type=image_type),
                "question": [r[1] for r in rows],
                "answer": [r[2] for r in rows],
            }
        )
        (root / "data").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / "data" / f"{split}-00000-of-00001.parquet", row_group_size=2)
    (root / "README.md").write_text("---\nlicense: mit\n---\n")
    return root


def pathvqa_pickle_tree(root: Path) -> Path:
    """The official release: pvqa/images/<split>/*.jpg and pvqa/qas/<split>/<split>_qa.pkl (pickles only)."""
    for split in ("train", "val", "test"):
        write_image(root / "pvqa" / "images" / split / f"{split}_0001.jpg", seed=1)
        pkl = root / "pvqa" / "qas" / split / f"{split}_qa.pkl"
        pkl.parent.mkdir(parents=True, exist_ok=True)
        pkl.write_bytes(b"\x80\x04\x95 not to be loaded")
    return root


def roco_tree(root: Path) -> Path:
    """data/<split>/radiology/{captions.txt, dlinks.txt, licences.txt, images/<PMCID>_<file>.jpg}."""
    n = 0
    for split in ("train", "validation", "test"):
        folder = root / "data" / split / "radiology"
        captions, dlinks, licences = [], [], ["ROCO_ID,PMC_ID,CC"]
        for i in range(2):
            n += 1
            rid, pmc, name = f"ROCO_{n:05d}", f"PMC{3970000 + n}", f"CRIONM2014-93154{n}.00{i}.jpg"
            write_image(folder / "images" / f"{pmc}_{name}", seed=n)
            captions.append(f'{rid}\t Axial CT of case {n} showing a "target" lesion (arrow).')
            dlinks.append(f"{rid}\twget -r ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/oa_package/1e/ed/{pmc}.tar.gz\t{name}")
            licences.append(f"{rid},{pmc}_{name},CC BY")
        # fetch.py failed for this one: listed, never downloaded
        captions.append(f"ROCO_9{n:04d}\t A radiograph whose download failed.")
        licences.append(f"ROCO_9{n:04d},PMC9_missing.jpg,CC BY-NC")
        (folder / "captions.txt").write_text("\n".join(captions) + "\n")
        (folder / "dlinks.txt").write_text("\n".join(dlinks) + "\n")
        (folder / "licences.txt").write_text("\n".join(licences) + "\n")
        other = root / "data" / split / "non-radiology"
        write_image(other / "images" / "PMC1_photo.jpg", seed=90)
        (other / "captions.txt").write_text("ROCO_99999\t A photograph of the operating field.\n")
    (root / "data" / "train" / "radiology" / "captions.txt").open("a").write("ROCO_00001\t\n")  # empty caption
    return root


def lits_tree(root: Path) -> Path:
    """'Training Batch 1|2'/volume-<n>.nii beside segmentation-<n>.nii; Test-Data/test-volume-<n>.nii."""
    rng = np.random.default_rng(3)
    for batch, n in (("Training Batch 1", 0), ("Training Batch 2", 28)):
        vol = rng.normal(60, 200, (40, 32, 8)).astype(np.float32)
        seg = np.zeros(vol.shape, np.uint8)
        seg[8:30, 6:26, 2:6] = 1
        seg[12:16, 10:14, 4] = 2  # a tumour inside the liver on one slice
        _nii(root / batch / f"volume-{n}.nii", vol)
        _nii(root / batch / f"segmentation-{n}.nii", seg)
    _nii(root / "Training Batch 2" / "segmentation-99.nii", np.zeros((40, 32, 8), np.uint8))  # no volume
    _apple_double(root / "Training Batch 1" / "._volume-0.nii")
    _nii(root / "Test-Data" / "test-volume-0.nii", rng.normal(60, 200, (40, 32, 8)).astype(np.float32))
    return root


def btcv_tree(root: Path) -> Path:
    """RawData/Training/{img/img<nnnn>.nii.gz, label/label<nnnn>.nii.gz}, RawData/Testing/img/."""
    base = root / "RawData"
    rng = np.random.default_rng(4)
    for n in (1, 2):
        vol = rng.normal(40, 200, (40, 32, 8)).astype(np.float32)
        label = np.zeros(vol.shape, np.uint8)
        label[4:12, 4:12, 2:6] = 1  # spleen
        label[20:36, 14:30, 1:7] = 6  # liver
        _nii(base / "Training" / "img" / f"img{n:04d}.nii.gz", vol)
        _nii(base / "Training" / "label" / f"label{n:04d}.nii.gz", label)
    _nii(base / "Training" / "label" / "label0009.nii.gz", np.zeros((40, 32, 8), np.uint8))  # no image
    (base / "Training" / "img" / "img0003.nii.gz").write_bytes(b"\x1f\x8b truncated")  # damaged download
    _nii(base / "Testing" / "img" / "img0061.nii.gz", rng.normal(40, 200, (40, 32, 8)).astype(np.float32))
    return base


def hrf_tree(root: Path) -> Path:
    """images/<nn>_<dr|g|h>.jpg with manual1/<nn>_<c>.tif (vessels) and mask/<nn>_<c>_mask.tif (field of view)."""
    for n, c in enumerate(["dr", "g", "h", "h"], start=1):
        write_image(root / "images" / f"{n:02d}_{c}.jpg", seed=n)
        _mask(root / "manual1" / f"{n:02d}_{c}.tif", [(2, 2, 30, 4)])
        _mask(root / "mask" / f"{n:02d}_{c}_mask.tif", [(0, 0, 32, 24)])
    write_image(root / "images" / "05_x.jpg", seed=5)  # no class suffix: unknown_label
    write_corrupt(root / "images" / "06_g.jpg")
    (root / "images" / "Thumbs.db").write_bytes(b"\x00" * 8)
    return root


def refuge_tree(root: Path) -> Path:
    """train/Images/g<nnnn>.jpg (glaucoma) and n<nnnn>.jpg (non-glaucoma), as FLAIR arranges REFUGE."""
    for n, c in enumerate("ggnn", start=1):
        write_image(root / "train" / "Images" / f"{c}{n:04d}.jpg", seed=n)
    write_image(root / "train" / "Images" / "V0001.jpg", seed=9)  # an unlabelled validation image: unknown_label
    _mask(root / "train" / "Disc_Cup_Masks" / "g0001.bmp", [(4, 4, 12, 12)])  # excluded by the include glob
    return root


def oia_ddr_tree(root: Path) -> Path:
    """DR_grading/{train,valid,test}.txt ('<image> <grade>' lines) and DR_grading/<split>/<image>.jpg."""
    base = root / "DR_grading"
    for s_, split in enumerate(["train", "valid", "test"]):
        lines = []
        for i in range(2):
            name = f"2017022{s_}{i}0001{i}.jpg"
            write_image(base / split / name, seed=10 * s_ + i)
            lines.append(f"{name} {(s_ + i) % 5}")
        if split == "train":
            write_image(base / split / "20170220000099.jpg", seed=99)
            lines += ["20170220000099.jpg 5", "20170299999999.jpg 2"]  # ungradable; an image not in the archive
        base.mkdir(parents=True, exist_ok=True)
        (base / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def flare22_tree(root: Path) -> Path:
    """FLARE22_LabeledCase50/{images/FLARE22_Tr_<nnnn>_0000.nii.gz, labels/FLARE22_Tr_<nnnn>.nii.gz}."""
    base = root / "FLARE22_LabeledCase50"
    rng = np.random.default_rng(5)
    for n in (1, 2):
        vol = rng.normal(40, 200, (40, 32, 8)).astype(np.float32)
        label = np.zeros(vol.shape, np.uint8)
        label[20:36, 14:30, 1:7] = 1  # liver
        label[4:10, 4:10, 2:6] = 3  # spleen
        _nii(base / "images" / f"FLARE22_Tr_{n:04d}_0000.nii.gz", vol)
        _nii(base / "labels" / f"FLARE22_Tr_{n:04d}.nii.gz", label)
    _nii(base / "images" / "FLARE22_Tr_0003_0000.nii.gz", rng.normal(40, 200, (40, 32, 8)).astype(np.float32))
    _nii(base / "labels" / "FLARE22_Tr_0004.nii.gz", np.zeros((40, 32, 8), np.uint8))  # a label without its image
    _apple_double(base / "images" / "._FLARE22_Tr_0001_0000.nii.gz")
    return base


def fitzpatrick17k_tree(root: Path) -> Path:
    """fitzpatrick17k.csv (md5hash, fitzpatrick_scale, label, ..., url) with images/<md5hash>.jpg as downloaded."""
    header = ["md5hash", "fitzpatrick_scale", "fitzpatrick_centaur", "label", "nine_partition_label"]
    header += ["three_partition_label", "qc", "url", "url_alphanum"]
    labels = ["psoriasis", "lichen planus", "basal cell carcinoma", "allergic contact dermatitis"]
    rows = []
    for i, label in enumerate(labels):
        md5 = f"{i:02d}" + "a" * 30
        write_image(root / "images" / f"{md5}.jpg", seed=i)
        skin = (i % 6) + 1
        rows.append([md5, skin, skin, label, "inflammatory", "non-neoplastic", "", f"https://x/{i}.jpg", ""])
    rows.append(["ff" + "0" * 30, 2, 2, "psoriasis", "inflammatory", "non-neoplastic", "", "https://x/dead.jpg", ""])
    _csv(root / "fitzpatrick17k.csv", header, rows)
    return root


def deepeyenet_tree(root: Path) -> Path:
    """DeepEyeNet_{train,valid,test}.json: [{"eyenet0420/<split>_set/<name>.jpg": {keywords, clinical-description}}]."""
    for s_, split in enumerate(["train", "valid", "test"]):
        rows = []
        for i in range(2):
            name = f"eyenet0420/{split}_set/{s_}{i}_Retinitis-Pigmentosa-{i}.jpg"
            write_image(root / name, seed=10 * s_ + i)
            rows.append(
                {
                    name: {
                        "keywords": "retinitis pigmentosa, bone spicules",
                        "clinical-description": f"{i}. "
                        "Bone spicule pigmentation in the mid periphery with attenuated vessels.",
                    }
                }
            )
        if split == "train":
            rows.append({"eyenet0420/train_set/missing.jpg": {"keywords": "x", "clinical-description": "gone"}})
            rows.append(
                {"eyenet0420/train_set/00_Retinitis-Pigmentosa-0.jpg": {"keywords": "", "clinical-description": ""}}
            )
            rows.append({"a.jpg": {"clinical-description": "two keys"}, "b.jpg": {}})  # not a one-key object
        (root / f"DeepEyeNet_{split}.json").write_text(json.dumps(rows))
    return root


# card id -> builder of its layout as downloaded; returns the archive's top folder
DATASET_TREES = {
    "busi": busi_tree,
    "brain_tumor_mri": brain_tumor_mri_tree,
    "aptos2019": aptos2019_tree,
    "ham10000": ham10000_tree,
    "nih_chestxray14": nih_chestxray14_tree,
    "slake": slake_tree,
    "vqa_rad": vqa_rad_tree,
    "rocov2": rocov2_tree,
    "pmc_oa": pmc_oa_tree,
    "msd_spleen": msd_spleen_tree,
    "shenzhen_cxr": shenzhen_cxr_tree,
    "montgomery_cxr": montgomery_cxr_tree,
    "fives": fives_tree,
    "jsiec_1000": jsiec_1000_tree,
    "pathvqa": pathvqa_tree,
    "roco": roco_tree,
    "lits": lits_tree,
    "btcv": btcv_tree,
    "hrf": hrf_tree,
    "refuge": refuge_tree,
    "oia_ddr": oia_ddr_tree,
    "flare22": flare22_tree,
    "fitzpatrick17k": fitzpatrick17k_tree,
    "deepeyenet": deepeyenet_tree,
}
