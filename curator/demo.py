"""Sample sources for the demo build: small, deterministic, made here, nothing downloaded.

Each folder mirrors the native layout of a real public dataset, so the same
adapters and cards serve the real thing. Each also carries the traps real data
has (a truncated file, a stray non-image, a row naming a missing file or a path
outside the root, a malformed line), so the demo shows rejects with reasons.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from pydicom.data import get_testdata_file

log = logging.getLogger(__name__)

DEMO_VERSION = "2"
SEED = 20261123

CHEXPERT_LABELS = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]
CHEXPERT_COLUMNS = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]

# Real files pydicom ships (NEMA WG04 samples): uncompressed, RLE, JPEG 2000, a
# truncated one, and a 12-bit JPEG Extended file that gdcm refuses and imagecodecs
# (curator.readers.dicom_codecs) decodes.
DICOM_FILES = {
    "CT_small.dcm": "PAT1CT1/STUDY1/SERIES1/IM000001",
    "MR_small.dcm": "PAT4MR1/STUDY1/SERIES1/IM000001",
    "MR_small_RLE.dcm": "PAT4MR1/STUDY1/SERIES2/IM000001",
    "MR_small_jp2klossless.dcm": "PAT4MR1/STUDY1/SERIES3/IM000001",
    "JPEG2000.dcm": "PAT8NM1/STUDY1/SERIES1/IM000001",
    "MR_truncated.dcm": "PAT4MR1/STUDY1/SERIES4/IM000001",
    "JPEG-lossy.dcm": "PAT8NM1/STUDY1/SERIES2/IM000001",
}


def _phantom(rng: np.random.Generator, size: tuple[int, int], blobs: int) -> np.ndarray:
    """A body-like ellipse with internal structure, a few bright blobs and noise, values in [0, 1].

    Position, shape and a smooth internal texture vary per image, so that distinct
    demo images are distinct to a perceptual hash too (real scans are; identical
    smooth ellipses would all look like near-duplicates).
    """
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = h * rng.uniform(0.4, 0.6), w * rng.uniform(0.4, 0.6)
    ay, ax = rng.uniform(0.3, 0.46) * h, rng.uniform(0.28, 0.44) * w
    body = (((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2) < 1
    # smooth texture: a sum of a few random low-frequency waves
    texture = sum(
        np.sin(2 * np.pi * (rng.uniform(0.5, 3) * yy / h + rng.uniform(0.5, 3) * xx / w) + rng.uniform(0, 6.3))
        for _ in range(3)
    )
    img = 0.08 + body * (0.4 + 0.08 * texture)
    for _ in range(blobs):
        by, bx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        r = rng.uniform(0.04, 0.12) * min(h, w)
        img = img + 0.4 * (((yy - by) ** 2 + (xx - bx) ** 2) < r * r)
    img = img + rng.normal(0, 0.03, size)
    return np.clip(img, 0, 1)


def _save_png(path: Path, unit: np.ndarray, bits: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if bits == 16:
        Image.fromarray(np.round(unit * 65535).astype(np.uint16)).save(path, format="PNG")
    else:
        Image.fromarray(np.round(unit * 255).astype(np.uint8)).save(path, format="PNG")


def _save_jpeg(path: Path, unit: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(unit * 255).astype(np.uint8)).save(path, format="JPEG", quality=90)


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def make_radimagenet(root: Path, rng: np.random.Generator) -> None:
    """RadImageNet: radiology_ai/<modality>/<anatomy>/<label>/<image>.png."""
    classes = {
        ("CT", "lung", "interstitial_lung_disease"): 4,
        ("CT", "lung", "nodule"): 3,
        ("CT", "lung", "normal"): 3,
        ("MR", "knee", "acl_pathology"): 3,
        ("MR", "knee", "meniscal_tear"): 3,
        ("US", "abd", "gallstone"): 3,
    }
    base = root / "radiology_ai"
    for (modality, anatomy, label), n in classes.items():
        for i in range(n):
            path = base / modality / anatomy / label / f"{anatomy}{i:06d}.png"
            _save_png(path, _phantom(rng, (128, 128), blobs=1 + i % 3), bits=16 if modality == "MR" else 8)
    _truncate(base / "CT" / "lung" / "nodule" / "lung000002.png", 0.4)
    (base / "CT" / "lung" / "normal" / "Thumbs.db").write_bytes(b"\x00" * 64)
    (base / "CT" / "README.txt").write_text("Images are 256x256 PNG slices.\n")


def make_chexpert(root: Path, rng: np.random.Generator) -> None:
    """CheXpert-v1.0-small: train.csv / valid.csv with the real columns; paths include the folder name."""
    top = root / "CheXpert-v1.0-small"
    values = ["1.0", "0.0", "-1.0", "", "", ""]
    for split, patients in (("train", range(1, 9)), ("valid", range(64541, 64544))):
        rows = []
        for p in patients:
            for study in (1, 2) if p % 3 == 0 else (1,):
                rel = f"{split}/patient{p:05d}/study{study}/view1_frontal.jpg"
                _save_jpeg(top / rel, _phantom(rng, (160, 128), blobs=p % 3))
                labels = {c: values[int(rng.integers(len(values)))] for c in CHEXPERT_LABELS}
                if not any(v == "1.0" for v in labels.values()):
                    labels["No Finding"] = "1.0"
                rows.append(
                    {
                        "Path": f"CheXpert-v1.0-small/{rel}",
                        "Sex": ["Female", "Male"][p % 2],
                        "Age": str(40 + p),
                        "Frontal/Lateral": "Frontal",
                        "AP/PA": ["AP", "PA"][p % 2],
                        **labels,
                    }
                )
        if split == "train":
            blank = {c: "" for c in CHEXPERT_LABELS}
            rows.append(
                {
                    "Path": "CheXpert-v1.0-small/train/patient00099/study1/view1_frontal.jpg",
                    "Sex": "Male",
                    "Age": "70",
                    "Frontal/Lateral": "Frontal",
                    "AP/PA": "AP",
                    **blank,
                    "Edema": "1.0",
                }
            )
            rows.append(
                {
                    "Path": "CheXpert-v1.0-small/../../etc/passwd",
                    "Sex": "Male",
                    "Age": "1",
                    "Frontal/Lateral": "Frontal",
                    "AP/PA": "AP",
                    **blank,
                }
            )
        with open(top / f"{split}.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CHEXPERT_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    _truncate(top / "train/patient00002/study1/view1_frontal.jpg", 0.6)


ROCO_CAPTIONS = [
    "Axial CT of the chest showing a spiculated mass in the right upper lobe.",
    "Chest radiograph demonstrating bilateral pleural effusions.",
    "Sagittal T2-weighted MRI of the lumbar spine with L4-L5 disc herniation.",
    "Ultrasound of the right upper quadrant showing cholelithiasis with posterior acoustic shadowing.",
    "Contrast-enhanced CT of the abdomen showing a hypodense hepatic lesion.",
    "Axial FLAIR MRI showing periventricular white matter hyperintensities.",
    "Panoramic dental radiograph with an impacted lower third molar.",
    "Coronal CT of the paranasal sinuses with mucosal thickening of the maxillary sinus.",
]


def make_rocov2(root: Path, rng: np.random.Generator) -> None:
    """ROCOv2: <split>_captions.csv (ID, Caption) and <split>/<ID>.jpg."""
    for split, start, n in (("train", 1, 6), ("valid", 1, 2)):
        rows = []
        for i in range(start, start + n):
            rid = f"ROCOv2_2023_{split}_{i:06d}"
            _save_jpeg(root / split / f"{rid}.jpg", _phantom(rng, (120, 160), blobs=i % 4))
            caption = ROCO_CAPTIONS[(i - 1 + (0 if split == "train" else 6)) % len(ROCO_CAPTIONS)]
            rows.append({"ID": rid, "Caption": caption})
        if split == "train":
            rows.append({"ID": "ROCOv2_2023_train_000999", "Caption": "Image missing from the download."})
        with open(root / f"{split}_captions.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["ID", "Caption"])
            writer.writeheader()
            writer.writerows(rows)


ZH_CAPTIONS = [
    "胸部正位X线片显示右下肺野斑片状阴影，考虑肺炎。",
    "头颅CT平扫示左侧基底节区高密度影，提示脑出血。",
    "腹部超声显示胆囊内强回声伴声影，符合胆囊结石。",
    "膝关节MRI矢状位T2加权像示内侧半月板后角撕裂。",
    "胸部CT肺窗示右肺上叶磨玻璃结节。",
]


def make_zh_captions(root: Path, rng: np.random.Generator) -> None:
    """A Chinese image-caption set as JSONL: {"image": ..., "caption": ...} per line."""
    lines = []
    for i, caption in enumerate(ZH_CAPTIONS):
        rel = f"images/zh_{i:04d}.png"
        rgb = np.stack([_phantom(rng, (96, 96), blobs=1)] * 3, axis=-1)
        rgb[..., 0] = np.clip(rgb[..., 0] * 1.1, 0, 1)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(path, format="PNG")
        lines.append(json.dumps({"image": rel, "caption": caption}, ensure_ascii=False))
    lines.insert(3, '{"image": "images/zh_0099.png", "caption": 未加引号')
    (root / "annotations.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_dicom(root: Path) -> None:
    """A PACS-style export: DICOM/<patient>/<study>/<series>/IM000001, no extensions."""
    for name, rel in DICOM_FILES.items():
        dest = root / "DICOM" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(get_testdata_file(name), dest)
    (root / "DICOM" / "PAT1CT1" / "export_log.txt").write_text("exported by a PACS\n")


def _ct_volume(rng: np.random.Generator, shape=(64, 64, 16), tumour=True) -> tuple[np.ndarray, np.ndarray]:
    x, y, z = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]]
    hu = np.full(shape, -1000.0)
    body = ((x - 32) / 28) ** 2 + ((y - 32) / 24) ** 2 < 1
    hu[body] = 20.0
    liver = ((x - 22) / 12) ** 2 + ((y - 30) / 10) ** 2 + ((z - 8) / 7) ** 2 < 1
    hu[liver] = 60.0
    mask = np.zeros(shape, np.uint8)
    mask[liver] = 1
    if tumour:
        t = ((x - 24) / 4) ** 2 + ((y - 30) / 4) ** 2 + ((z - 9) / 2.5) ** 2 < 1
        hu[t] = 10.0
        mask[t] = 2
    hu = hu + rng.normal(0, 8, shape)
    return hu.astype(np.int16), mask


def make_msd(root: Path, rng: np.random.Generator) -> None:
    """Medical Segmentation Decathlon Task03_Liver: dataset.json, imagesTr/, labelsTr/."""
    # Anisotropic voxels (0.8 x 0.8 x 2.5 mm), as abdominal CT usually is.
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    training = []
    for i in range(2):
        hu, mask = _ct_volume(rng, tumour=i == 0)
        for folder, data in (("imagesTr", hu), ("labelsTr", mask)):
            img = nib.Nifti1Image(data, affine)
            img.header["descrip"] = b"patient Jane Doe scanned 2019-03-04"  # free text that must not leak
            (root / folder).mkdir(parents=True, exist_ok=True)
            _save_nifti(img, root / folder / f"liver_{i}.nii.gz")
        training.append({"image": f"./imagesTr/liver_{i}.nii.gz", "label": f"./labelsTr/liver_{i}.nii.gz"})
    hu, mask = _ct_volume(rng)
    _save_nifti(nib.Nifti1Image(hu, affine), root / "imagesTr" / "liver_2.nii.gz")
    _save_nifti(nib.Nifti1Image(mask, affine), root / "labelsTr" / "liver_2.nii.gz")
    _truncate(root / "imagesTr" / "liver_2.nii.gz", 0.5)
    training.append({"image": "./imagesTr/liver_2.nii.gz", "label": "./labelsTr/liver_2.nii.gz"})
    meta = {
        "name": "Liver",
        "description": "Liver and tumour segmentation (demo volumes)",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "liver", "2": "cancer"},
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))


def _save_nifti(img: nib.Nifti1Image, path: Path) -> None:
    # gzip with mtime=0 so the demo files are byte-identical on every machine
    raw = img.to_bytes()
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw)
    path.write_bytes(buf.getvalue())


SOURCES = {
    "radimagenet": make_radimagenet,
    "chexpert": make_chexpert,
    "rocov2": make_rocov2,
    "zh_captions": make_zh_captions,
    "dicom": make_dicom,
    "msd_liver": make_msd,
}


def make_demo_sources(out: Path, force: bool = False) -> dict[str, Path]:
    """Write every demo source below ``out``; skipped when a marker of this version exists."""
    out = Path(out)
    marker = out / ".demo-complete"
    roots = {name: out / name for name in SOURCES}
    if not force and marker.is_file() and marker.read_text().strip() == DEMO_VERSION:
        return roots
    rng = np.random.default_rng(SEED)
    for name, make in SOURCES.items():
        root = roots[name]
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        if name == "dicom":
            make(root)
        else:
            make(root, np.random.default_rng(rng.integers(2**32)))
        log.info("demo source %s written to %s", name, root)
    marker.write_text(DEMO_VERSION + "\n")
    return roots


def write_demo_recipe(data: Path, dest: Path) -> Path:
    """The project's recipes/demo.toml with source roots under ``data`` and an absolute registry.

    For tests and benchmarks that build the demo somewhere other than data/demo.
    """
    from curator.registry import default_registry, project_dir

    text = (project_dir("recipes", "CURATOR_RECIPES") / "demo.toml").read_text(encoding="utf-8")
    text = text.replace('root = "../data/demo/', f'root = "{Path(data).resolve()}/')
    path = Path(dest) / "demo.toml"
    path.write_text(f'registry = "{default_registry().resolve()}"\n' + text, encoding="utf-8")
    return path
