"""What each native layout must get right beyond the shared contract, the PHI scan, and `ingest --adapter`."""

from __future__ import annotations

import json
import re
import shutil
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
from click.testing import CliRunner
from dicom_fixtures import CHARSET_FILES, PYDICOM_FILES
from fake_trees import BUILDERS, write_image
from pydicom.misc import is_dicom

from curator.adapters.base import Indexed, Rejected, Stats
from curator.cli import main
from curator.config import DuplicateSettings, HoldoutSettings, IngestSettings, ShardSettings
from curator.registry import adapter_class, adhoc_card, find_card
from curator.stages.index import run_index
from curator.stages.ingest import ingest_source
from curator.stages.shard import run_shard
from curator.storage import Corpus
from curator.vocab import canonical_label


def _run(card, root):
    stats = Stats()
    out = list(adapter_class(card.adapter.name)(card, root).run(IngestSettings(), stats))
    indexed = [o for o in out if isinstance(o, Indexed)]
    return stats, indexed, [o.row for o in out if isinstance(o, Rejected)]


def _card(source_id: str, **image):
    card, _ = find_card(source_id)
    return card.model_copy(update={"image": card.image.model_copy(update=image)}) if image else card


def test_msd_boxes_are_in_output_pixels_after_resize(tmp_path):
    card = _card("msd_liver", max_side=16)
    BUILDERS["nifti_volumes"](adapter_class("nifti_volumes")(card, tmp_path), tmp_path)
    _, indexed, _ = _run(card, tmp_path)
    case = indexed[0]
    by_id = {r["sample_id"]: r for r in case.images}
    boxes = [a for a in case.annotations if a["kind"] == "label" and a["boxes"]]
    assert {b["native"] for b in boxes} == {"liver", "cancer"}
    liver = next(b for b in boxes if b["native"] == "liver")
    img = by_id[liver["sample_id"]]
    # slice is 32 rows (y, 0.8 mm) x 40 columns (x, 0.8 mm): longest side 40 -> 16, scale 0.4
    assert (img["width"], img["height"]) == (16, 13)
    [box] = liver["boxes"]
    x0, y0, x1, y1 = box["x0"], box["y0"], box["x1"], box["y1"]
    sx, sy = 16 / 40, 13 / 32
    assert [x0, y0, x1, y1] == [round(10 * sx, 2), round(16 * sy, 2), round(20 * sx, 2), round(24 * sy, 2)]
    # slices without the mask have neither labels nor boxes; labels follow the mask per slice
    labelled = {a["sample_id"] for a in case.annotations if a["kind"] == "label"}
    assert 0 < len(labelled) < len(case.images)


def test_rows_naming_one_image_make_one_sample(tmp_path):
    card = _card("pmc_oa")
    BUILDERS["image_text"](adapter_class("image_text")(card, tmp_path), tmp_path)
    stats, indexed, _ = _run(card, tmp_path)
    samples = [r["sample_id"] for o in indexed for r in o.images]
    captions = [a for o in indexed for a in o.annotations if a["kind"] == "caption"]
    assert len(samples) == 3 and len(captions) == 4
    first = [a["text"] for a in captions if a["sample_id"] == samples[0]]
    assert sorted(first) == ["A second caption for the same image.", "Caption 0"]
    assert stats.indexed_items == 4 and stats.images == 3


def test_nih_layout_splits_labels_and_vocabulary(tmp_path):
    card = _card("nih_chestxray14")
    BUILDERS["label_csv"](adapter_class("label_csv")(card, tmp_path), tmp_path)
    _, indexed, rejects = _run(card, tmp_path)
    assert {r["reason"] for r in rejects} == {"bad_row", "missing_file", "path_escape", "unknown_label"}
    splits = {o.item.uri.rsplit("/", 1)[-1]: o.images[0]["split"] for o in indexed}
    assert set(splits.values()) == {"train", "test"}  # from train_val_list.txt / test_list.txt
    natives = {a["native"]: a["text"] for o in indexed for a in o.annotations}
    assert natives["No Finding"] == "no finding"
    # two rows per Patient ID share one keyed hash; the raw ID is no column's value
    keys = [o.images[0]["patient_key"] for o in indexed]
    assert len(set(keys)) == 2 and all(len(k) == 24 for k in keys)
    values = {json.dumps(v) if isinstance(v, dict) else v for o in indexed for r in o.images for v in r.values()}
    assert not {"00000", "00001"} & values


def test_vocabulary_unifies_effusion_and_keeps_domains_apart():
    assert canonical_label("Effusion", "X-ray", "chest") == canonical_label("Pleural Effusion", "X-ray", "chest")
    assert canonical_label("Pleural_Thickening", "X-ray", "chest") == "pleural thickening"
    assert canonical_label("Edema", "X-ray", "chest") == "pulmonary edema"
    assert canonical_label("edema", "MRI", "brain") == "peritumoral edema"
    assert canonical_label("mel", "dermoscopy", "skin") == "melanoma"
    assert canonical_label("Some New Finding", "CT", "abdomen") == "some new finding"


def test_chexpert_uncertainty_policy(tmp_path):
    keep = _card("chexpert")
    BUILDERS["label_csv"](adapter_class("label_csv")(keep, tmp_path), tmp_path)
    _, indexed, _ = _run(keep, tmp_path)
    values = {a["value"] for o in indexed for a in o.annotations}
    assert values == {"positive", "negative", "uncertain"}
    params = {**keep.adapter.params, "uncertain": "drop"}
    drop = keep.model_copy(update={"adapter": keep.adapter.model_copy(update={"params": params})})
    _, indexed, _ = _run(drop, tmp_path)
    assert {a["value"] for o in indexed for a in o.annotations} == {"positive", "negative"}


def test_mimic_reports_per_study_and_patient_grouping(tmp_path):
    card = _card("mimic_cxr")
    BUILDERS["image_report"](adapter_class("image_report")(card, tmp_path), tmp_path)
    _, indexed, rejects = _run(card, tmp_path)
    assert sorted(r["reason"] for r in rejects) == ["missing_report", "missing_report", "unsupported_format"]
    rows = [r for o in indexed for r in o.images]
    assert len({r["patient_key"] for r in rows}) == 1  # p10000032 in both studies
    assert len({r["study_key"] for r in rows}) == 2
    assert {r["split"] for r in rows} and len({r["split"] for r in rows}) == 1  # one patient, one split
    sections = {json.loads(a["payload"]).get("section") for o in indexed for a in o.annotations}
    assert sections == {None, "FINDINGS", "IMPRESSION"}
    # the publisher's pseudonymous subject id stays in original_uri (provenance), never as a key
    assert not {"p10000032", "10000032"} & {r["patient_key"] for r in rows}


def test_burned_in_flag_rejected_unless_card_allows(tmp_path):
    from dicom_fixtures import make_dicom

    make_dicom(tmp_path / "a" / "IM1", np.arange(64, dtype=np.uint16).reshape(8, 8), BurnedInAnnotation="YES")
    make_dicom(tmp_path / "a" / "IM2", np.arange(64, dtype=np.uint16).reshape(8, 8), BurnedInAnnotation="NO")
    card = adhoc_card("dicom_folder", tmp_path)
    stats, _, _ = _run(card, tmp_path)
    assert stats.rejects == {"burned_in_annotation": 1} and stats.images == 1
    allowing = adhoc_card("dicom_folder", tmp_path, image={"burned_in": "allow"})
    assert _run(allowing, tmp_path)[0].images == 2


# -- de-identification: the identifiers in pydicom's own files never reach the index or a shard ---
IDENTIFYING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "AccessionNumber",
    "InstitutionName",
    "ReferringPhysicianName",
    "OtherPatientIDs",
    "PatientAddress",
)


def _identifiers(files: list[Path]) -> set[str]:
    found: set[str] = set()
    for path in files:
        if not is_dicom(path):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - the scan only collects what parses
            continue
        for name in IDENTIFYING:
            value = ds.get(name)
            values = list(value) if isinstance(value, pydicom.multival.MultiValue) else [value]
            for v in values:
                text = str(v or "").strip()
                parts = [text, *text.split("^")] if "Name" in name else [text]
                # short values ("1", "204", "Here") are not identifying on their own and match anything
                found |= {p.strip() for p in parts if len(p.strip()) >= 6}
    return found


def test_no_dicom_identifier_reaches_index_or_shards(tmp_path):
    root = tmp_path / "export"
    # a PACS export names folders by patient ID: copy pydicom's files under such folders too
    shutil.copytree(PYDICOM_FILES, root / "test_files")
    shutil.copytree(CHARSET_FILES, root / "charset_files")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for path in files[:40]:
        if is_dicom(path):
            try:
                pid = str(pydicom.dcmread(path, stop_before_pixels=True).get("PatientID") or "")
            except Exception:  # noqa: BLE001
                continue
            if len(pid) >= 6:
                dest = root / "by_patient" / pid / path.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, dest)
    secrets = _identifiers(files)
    assert len(secrets) > 30
    card = adhoc_card("dicom_folder", root, source_id="phi_scan", modality="CT", image={"max_side": 64})
    card_path = tmp_path / "card.json"
    card_path.write_text(card.model_dump_json())
    corpus = Corpus(str(tmp_path / "corpus"))
    result = ingest_source(corpus, card, card_path, root, IngestSettings(), progress=False)
    assert result.stats.images > 80 and result.stats.rejected > 50
    run_index(corpus, DuplicateSettings(), HoldoutSettings())
    run_shard(corpus, ShardSettings(), "phi", progress=False)

    texts = []
    for part in sorted((tmp_path / "corpus").rglob("*.parquet")):
        texts.append(json.dumps(pq.read_table(part).to_pylist(), default=str, ensure_ascii=False))
    shards = sorted((tmp_path / "corpus").rglob("*.tar"))
    assert shards
    for shard in shards:
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                texts.append(member.name)
                if member.name.endswith((".json", ".txt")):
                    texts.append(tar.extractfile(member).read().decode("utf-8"))
    for marker in (tmp_path / "corpus").rglob("*.json"):
        texts.append(marker.read_text(encoding="utf-8"))
    blob = "\n".join(texts)
    leaked = sorted(s for s in secrets if s in blob)
    assert not leaked, leaked


# -- the CLI without a card --------------------------------------------------------------
def test_ingest_with_generic_adapter_from_cli(tmp_path):
    data = tmp_path / "kaggle_xray"
    for split in ("train", "test"):
        for label in ("NORMAL", "PNEUMONIA"):
            for i in range(2):
                write_image(data / split / label / f"{label}_{i}.png", seed=i + len(label))
    out = tmp_path / "out"
    args = ["ingest", "--adapter", "class_folders", "--root", str(data), "--out", str(out), "-q"]
    opts = ["--modality", "X-ray", "--anatomy", "chest", "--license", "CC-BY-4.0", "--access", "open"]
    result = CliRunner().invoke(main, [*args, *opts, "--param", 'levels=["split","label"]'])
    assert result.exit_code == 0, result.output
    # the default id hashes the root path: a folder name may identify a patient
    assert re.search(r"class_folders_[0-9a-f]{8} +8 +8 +8 +0", result.output), result.output
    sources = pq.read_table(next((out / "index" / "sources").glob("*.parquet"))).to_pylist()
    assert sources[0]["license"] == "CC-BY-4.0" and sources[0]["access"] == "open"
    images = pq.read_table(next((out / "index" / "images").glob("*.parquet"))).to_pylist()
    assert {r["split"] for r in images} == {"train", "test"} and {r["modality"] for r in images} == {"X-ray"}


def test_ingest_cli_mistakes_are_one_line(tmp_path):
    runner = CliRunner()
    base = ["ingest", "--root", str(tmp_path), "--out", str(tmp_path / "o")]
    bad = runner.invoke(main, [*base, "--adapter", "label_csv", "--param", "csv=[]"])
    assert (
        bad.exit_code == 1
        and bad.output.startswith("error: --adapter label_csv: --param")
        and "Traceback" not in bad.output
    )
    unknown = runner.invoke(main, [*base, "--adapter", "no_such"])
    assert unknown.exit_code == 1 and "unknown adapter 'no_such'" in unknown.output
    both = runner.invoke(main, [*base, "--adapter", "class_folders", "--source", "chexpert"])
    assert both.exit_code == 2 and "exactly one of --source" in both.output
    neither = runner.invoke(main, base)
    assert neither.exit_code == 2


def test_blank_edge_slices_do_not_cost_the_volume(tmp_path):
    """Zero-padded slices (common at the top and bottom of MRI) are skipped and counted, not rejected."""
    import nibabel as nib

    vol = np.zeros((16, 16, 6), np.float32)
    vol[4:12, 4:12, 2:4] = np.random.default_rng(0).random((8, 8, 2)) + 1
    (tmp_path / "imagesTr").mkdir()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "imagesTr" / "mr.nii.gz"))
    (tmp_path / "dataset.json").write_text(
        json.dumps({"modality": {"0": "MRI"}, "training": [{"image": "imagesTr/mr.nii.gz"}]})
    )
    stats, indexed, _ = _run(adhoc_card("nifti_volumes", tmp_path), tmp_path)
    assert stats.indexed_items == 1 and stats.images == 2 and stats.blank_frames == 4
    assert [r["frame_index"] for r in indexed[0].images] == [2, 3]
    # both slices share the volume's intensity scale
    windows = {r["transform"]["window"]["origin"] for r in indexed[0].images}
    assert windows == {"volume percentile 0.5-99.5"}


def test_multiframe_dicom_keeps_the_cards_frame_step(tmp_path):
    from dicom_fixtures import make_dicom

    frames = np.stack([np.arange(64, dtype=np.uint16).reshape(8, 8) + 10 * i for i in range(6)])
    make_dicom(tmp_path / "cine" / "IM1", frames, modality="US", WindowCenter=60, WindowWidth=120)
    card = adhoc_card("dicom_folder", tmp_path, params={"frame_step": 2})
    _, indexed, _ = _run(card, tmp_path)
    assert [r["frame_index"] for r in indexed[0].images] == [0, 2, 4]
    assert len({r["sample_id"] for r in indexed[0].images}) == 3


def test_vqa_pairs_keep_answer_and_row_language(tmp_path):
    card = _card("slake")
    BUILDERS["image_text"](adapter_class("image_text")(card, tmp_path), tmp_path)
    _, indexed, rejects = _run(card, tmp_path)
    vqa = [a for o in indexed for a in o.annotations]
    assert {a["kind"] for a in vqa} == {"vqa"} and {a["language"] for a in vqa} == {"en", "zh"}
    answers = {json.loads(a["payload"])["answer"] for a in vqa}
    assert {"yes", "left lung", "CT"} <= answers
    assert {r["split"] for o in indexed for r in o.images} == {"train", "val", "test"}


def test_sources_list_shows_licence_and_access_of_real_cards():
    result = CliRunner().invoke(main, ["sources", "list"])
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert "credentialed" in lines["mimic_cxr"] and "PhysioNet-Credentialed-Health-Data" in lines["mimic_cxr"]
    assert "on-request" in lines["chexpert"] and "on-request" in lines["radimagenet"]
    assert "open" in lines["nih_chestxray14"] and "CC-BY-SA-4.0" in lines["msd_liver"]
    for required in ("pmc_oa", "quilt_1m", "llava_med", "rocov2", "openi", "mm_retinal", "flair_fundus"):
        assert required in lines


def test_list_parameters_accept_plain_text_on_the_command_line(tmp_path):
    card = adhoc_card("label_csv", tmp_path, params={"csv": "a.csv,b.csv", "label_column": "labels"})
    assert card.adapter.params["csv"] == ["a.csv", "b.csv"]
