"""The named datasets as downloaded today (tests/fake_trees.py DATASET_TREES): what each must get right.

Each test builds the dataset's documented layout, runs its shipped card and checks the
issue's failure modes are gone: masks are regions and never images, official test
sets stay test, labels are named and normal states are no findings, per-row metadata
is kept, and every file is indexed, rejected with a reason or counted as skipped.
"""

from __future__ import annotations

import json

from fake_trees import DATASET_TREES

from curator.adapters.base import Indexed, Rejected, Stats
from curator.config import IngestSettings
from curator.registry import adapter_class, find_card


def _run(source_id, tmp_path, root=None):
    card, _ = find_card(source_id)
    top = DATASET_TREES[source_id](tmp_path)
    adapter = adapter_class(card.adapter.name)(card, root or tmp_path)
    stats = Stats()
    out = list(adapter.run(IngestSettings(), stats))
    indexed = [o for o in out if isinstance(o, Indexed)]
    rejects = {o.row["original_uri"]: o.row for o in out if isinstance(o, Rejected)}
    images = {r["original_uri"]: r for o in indexed for r in o.images}
    labels = {}
    for o in indexed:
        uri = o.images[0]["original_uri"] if o.images else o.item.uri
        for a in o.annotations:
            if a["kind"] == "label":
                labels.setdefault(uri, []).append(a)
    return adapter, stats, images, labels, rejects, top, indexed


def _boxes(annotation) -> list:
    return [[b["x0"], b["y0"], b["x1"], b["y1"]] for b in annotation["boxes"] or []]


def test_busi_masks_are_regions_never_images(tmp_path):
    adapter, stats, images, labels, rejects, _, _ = _run("busi", tmp_path)
    assert adapter.root_used == "Dataset_BUSI_with_GT"
    assert not [u for u in images if "_mask" in u]
    assert len(images) == 6
    [benign1] = labels["benign/benign (1).png"]
    assert benign1["text"] == "benign" and _boxes(benign1) == [[2.0, 2.0, 8.0, 6.0], [20.0, 10.0, 30.0, 20.0]]
    [benign2] = labels["benign/benign (2).png"]
    assert len(_boxes(benign2)) == 2  # _mask.png and _mask_1.png
    [normal] = labels["normal/normal (1).png"]
    assert normal["text"] == "no finding" and json.loads(normal["payload"])["state"] == "normal"
    assert not _boxes(normal)
    assert rejects["malignant/malignant (9)_mask.png"]["reason"] == "bad_layout"
    assert rejects["benign/benign (3).png"]["reason"] == "mask_mismatch"
    assert stats.skipped == {"mask": 8, "macos_resource_fork": 1, "os_metadata": 1}


def test_busi_root_given_as_the_archive_top_folder(tmp_path):
    _run("busi", tmp_path)
    adapter, stats, images, *_ = _run("busi", tmp_path / "again", root=tmp_path / "Dataset_BUSI_with_GT")
    assert adapter.root_used == "." and len(images) == 6


def test_vqa_rad_official_test_questions_stay_test(tmp_path):
    _, stats, images, _, rejects, _, indexed = _run("vqa_rad", tmp_path)
    split = {u: r["split"] for u, r in images.items()}
    # synpic54610 has a training and a test question: the strictest split wins, counted
    assert split["VQA_RAD Image Folder/synpic54610.jpg"] == "test"
    assert split["VQA_RAD Image Folder/synpic54611.jpg"] == "train"
    assert split["VQA_RAD Image Folder/synpic54612.jpg"] == "test"
    assert stats.split_conflicts == 1
    assert images["VQA_RAD Image Folder/synpic54612.jpg"]["anatomy"] == "abdomen"
    assert images["VQA_RAD Image Folder/synpic54610.jpg"]["anatomy"] == "head"
    vqa = [a for o in indexed for a in o.annotations if a["kind"] == "vqa"]
    assert len(vqa) == 4
    assert rejects["VQA_RAD Image Folder/synpic99999.jpg"]["reason"] == "missing_file"


def test_nih_todays_table_boxes_and_no_finding(tmp_path):
    _, stats, images, labels, rejects, _, _ = _run("nih_chestxray14", tmp_path)
    assert len(images) == 5
    texts = {u.rsplit("/", 1)[-1]: sorted(a["text"] for a in a_) for u, a_ in labels.items()}
    assert texts["00000001_000.png"] == ["no finding"]
    assert texts["00000002_000.png"] == ["cardiomegaly", "pleural effusion"]
    infiltration = next(a for u, a_ in labels.items() if u.endswith("00000003_000.png") for a in a_)
    assert infiltration["native"] == "Infiltration" and _boxes(infiltration) == [[2.5, 3.0, 12.5, 11.0]]
    cardio = next(
        a for u, a_ in labels.items() if u.endswith("00000002_000.png") for a in a_ if a["native"] == "Cardiomegaly"
    )
    assert _boxes(cardio) == [[4.0, 5.0, 24.0, 17.0]]
    split = {u.rsplit("/", 1)[-1]: r["split"] for u, r in images.items()}
    assert split["00000004_000.png"] == split["00000005_000.png"] == "test"
    assert split["00000001_000.png"] == "train"
    assert {r["reason"] for r in rejects.values()} == {"missing_file", "unknown_label"}


def test_aptos_grades_named_and_test_list_unlabelled(tmp_path):
    _, _, images, labels, rejects, _, _ = _run("aptos2019", tmp_path)
    train = {u: r for u, r in images.items() if u.startswith("train_images")}
    test = {u: r for u, r in images.items() if u.startswith("test_images")}
    assert len(train) == 5 and len(test) == 2
    assert {r["split"] for r in test.values()} == {"test"}
    assert not any(u in labels for u in test)
    named = {a["native"]: a["text"] for u in train for a in labels[u]}
    assert named["no diabetic retinopathy"] == "no finding"
    assert named["proliferative diabetic retinopathy"] == "proliferative diabetic retinopathy"
    assert not any(a["text"] in "01234" for u in train for a in labels[u])
    assert sorted(r["reason"] for r in rejects.values()) == ["missing_file", "unknown_label"]


def test_brain_tumor_mri_official_split_and_no_tumour(tmp_path):
    _, _, images, labels, rejects, _, _ = _run("brain_tumor_mri", tmp_path)
    assert {r["split"] for u, r in images.items() if u.startswith("Testing/")} == {"test"}
    assert {r["split"] for u, r in images.items() if u.startswith("Training/")} == {"train"}
    [notumor] = labels["Training/notumor/Tr-no_0002.jpg"]
    assert notumor["text"] == "no finding" and notumor["native"] == "notumor"
    assert rejects["Training/stray.jpg"]["reason"] == "bad_layout"


def test_slake_row_metadata_masks_and_detection_boxes(tmp_path):
    adapter, _, images, labels, rejects, _, _ = _run("slake", tmp_path)
    assert adapter.root_used == "Slake1.0"
    assert {images[f"imgs/xmlab{i}/source.jpg"]["modality"] for i in range(3)} == {"CT", "MRI", "X-ray"}
    assert images["imgs/xmlab0/source.jpg"]["anatomy"] == "abdomen"
    assert images["imgs/xmlab2/source.jpg"]["split"] == "test"
    by_native = {a["native"]: a for a in labels["imgs/xmlab0/source.jpg"]}
    assert _boxes(by_native["Liver"]) == [[3.0, 3.0, 9.0, 9.0]]
    assert len(_boxes(by_native["segmented structure"])) == 2
    assert not [u for u in images if u.endswith(("mask.png", ".json"))]
    assert rejects["imgs/xmlab77/source.jpg"]["reason"] == "missing_file"


def test_rocov2_modality_from_concepts(tmp_path):
    _, _, images, _, rejects, _, _ = _run("rocov2", tmp_path)
    modality = {u.rsplit("/", 1)[-1]: r["modality"] for u, r in images.items()}
    assert modality["ROCOv2_2023_train_000001.jpg"] == "CT"
    assert modality["ROCOv2_2023_train_000002.jpg"] == "X-ray"
    assert modality["ROCOv2_2023_valid_000002.jpg"] == "MRI"
    assert {r["split"] for u, r in images.items() if u.startswith("valid/")} == {"val"}
    assert len(rejects) == 3


def test_msd_spleen_boxes_per_component_and_apple_double_files(tmp_path):
    adapter, _, images, _, rejects, _, indexed = _run("msd_spleen", tmp_path)
    assert adapter.root_used == "Task09_Spleen"
    assert not [u for u in images if "/._" in u]
    volume = next(o for o in indexed if o.item.uri.endswith("spleen_2.nii.gz"))
    by_frame = {r["sample_id"]: r["frame_index"] for r in volume.images}
    boxes = {by_frame[a["sample_id"]]: _boxes(a) for a in volume.annotations if a["kind"] == "label"}
    assert len(boxes[2]) == 2  # spleen and a separate splenule: two components, two boxes
    assert {r["series_key"] for r in volume.images} == {volume.images[0]["series_key"]}
    assert [r["slice_position"] for r in volume.images] == [0.0, 10.0, 20.0]
    assert rejects["imagesTr/spleen_4.nii.gz"]["reason"] == "missing_file"


def test_ham10000_and_pmc_oa_as_downloaded(tmp_path):
    _, _, images, labels, rejects, _, _ = _run("ham10000", tmp_path / "ham")
    assert len(images) == 5 and {r["reason"] for r in rejects.values()} == {"missing_file", "unknown_label"}
    assert labels["HAM10000_images_part_1/ISIC_0024308.jpg"][0]["text"] == "melanoma"
    _, _, images, _, rejects, _, _ = _run("pmc_oa", tmp_path / "pmc")
    assert len(images) == 3 and {r["reason"] for r in rejects.values()} == {"missing_file", "path_escape"}


def test_ingest_summary_names_the_folder_read_and_the_skipped_files(tmp_path):
    from helpers import run

    DATASET_TREES["busi"](tmp_path / "busi")
    result = run("ingest", "--source", "busi", "--root", tmp_path / "busi", "--out", tmp_path / "c", "-q")
    assert result.exit_code == 0, result.output
    assert "read Dataset_BUSI_with_GT/ below --root" in result.output
    assert "skipped, not inputs: macos_resource_fork=1, mask=8, os_metadata=1" in result.output


def test_nifti_folder_without_dataset_json(tmp_path):
    from curator.registry import adhoc_card

    card = adhoc_card(
        "nifti_folder",
        tmp_path,
        params={"masks": ["../labels/{name}"], "mask_dirs": ["labels"], "mask_values": {1: "tumour"}},
    )
    adapter = adapter_class("nifti_folder")(card, tmp_path)
    # an nnU-Net-style tree: volumes in images/, masks of the same name in labels/
    import nibabel as nib
    import numpy as np

    for n in range(2):
        vol = np.random.default_rng(n).normal(0, 100, (20, 16, 4)).astype(np.float32)
        mask = np.zeros(vol.shape, np.uint8)
        mask[2:6, 2:6, 1] = mask[12:16, 10:14, 1] = 1
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "labels").mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "images" / f"case{n}.nii.gz"))
        nib.save(nib.Nifti1Image(mask, np.eye(4)), str(tmp_path / "labels" / f"case{n}.nii.gz"))
    (tmp_path / "images" / "._case0.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    (tmp_path / "images" / "case0.json").write_text("{}")
    stats = Stats()
    out = list(adapter.run(IngestSettings(), stats))
    indexed = [o for o in out if isinstance(o, Indexed)]
    assert [o.item.uri for o in indexed] == ["images/case0.nii.gz", "images/case1.nii.gz"]
    assert stats.skipped == {"mask": 2, "macos_resource_fork": 1, "sidecar": 1}
    boxes = [_boxes(a) for a in indexed[0].annotations if a["kind"] == "label"]
    assert boxes and len(boxes[0]) == 2  # two components on slice 1: two boxes


def test_files_no_row_names_are_counted_not_lost(tmp_path):
    from fake_trees import write_image

    DATASET_TREES["ham10000"](tmp_path)
    write_image(tmp_path / "HAM10000_images_part_2" / "ISIC_0099998.jpg", seed=3)  # in no row
    write_image(tmp_path / "ham10000_images_part_1" / "ISIC_0024306.jpg", seed=0)  # Kaggle's lower-case copy
    card, _ = find_card("ham10000")
    stats = Stats()
    list(adapter_class("label_csv")(card, tmp_path).run(IngestSettings(), stats))
    assert stats.skipped == {"not_in_table": 1, "duplicate_name": 1}


def test_pathvqa_images_embedded_in_parquet(tmp_path):
    _, stats, images, _, rejects, _, indexed = _run("pathvqa", tmp_path)
    # two images per split; two questions about one image are one sample with two VQA pairs
    assert len(images) == 6 and stats.images == 6
    first = images["data/train-00000-of-00001.parquet#row0"]
    assert first["original_format"] == "jpeg" and first["split"] == "train"
    vqa = [a for o in indexed for a in o.annotations if a["sample_id"] == first["sample_id"]]
    assert sorted(json.loads(a["payload"])["answer"] for a in vqa) == ["necrosis", "yes"]
    assert {r["split"] for u, r in images.items() if u.startswith("data/validation-")} == {"val"}
    assert {r["split"] for u, r in images.items() if u.startswith("data/test-")} == {"test"}
    # the original hash is of the image bytes in the cell, so an auditor can check it against the table
    import hashlib

    import pyarrow.parquet as pq

    cell = pq.read_table(tmp_path / "data/train-00000-of-00001.parquet").column("image")[0].as_py()["bytes"]
    assert first["original_sha256"] == hashlib.sha256(cell).hexdigest()
    assert sorted(r["reason"] for r in rejects.values()) == ["bad_row", "bad_row", "truncated"]
    assert stats.seen == 12


def test_pathvqa_pickle_release_is_refused_in_one_line(tmp_path):
    from fake_trees import pathvqa_pickle_tree
    from helpers import run

    pathvqa_pickle_tree(tmp_path / "pvqa_download")
    result = run("ingest", "--source", "pathvqa", "--root", tmp_path / "pvqa_download", "--out", tmp_path / "c", "-q")
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: pathvqa: ") and "Python pickles (pvqa/qas/test/test_qa.pkl" in line
    assert "never unpickles" in line and "huggingface.co/datasets/flaviagiammarino/path-vqa" in line
    assert "Traceback" not in result.output


def test_roco_v1_captions_joined_to_downloaded_images(tmp_path):
    _, stats, images, _, rejects, _, indexed = _run("roco", tmp_path)
    assert len(images) == 6
    assert not [u for u in images if "non-radiology" in u]
    uri = "data/train/radiology/images/PMC3970001_CRIONM2014-931541.000.jpg"
    assert images[uri]["split"] == "train"
    [caption] = [a for o in indexed for a in o.annotations if a["sample_id"] == images[uri]["sample_id"]]
    assert caption["text"] == 'Axial CT of case 1 showing a "target" lesion (arrow).'  # quotes kept, no header
    assert {r["split"] for u, r in images.items() if u.startswith("data/validation/")} == {"val"}
    assert stats.rejects == {"missing_file": 3, "bad_row": 1}


def test_lits_volumes_paired_with_their_segmentations(tmp_path):
    _, stats, images, labels, rejects, _, _ = _run("lits", tmp_path)
    assert not [u for u in images if "segmentation" in u]
    assert {r["split"] for u, r in images.items() if u.startswith("Test-Data/")} == {"test"}
    assert sorted(a["text"] for a in labels["Training Batch 1/volume-0.nii"]) == ["liver", "liver tumour"]
    assert "Test-Data/test-volume-0.nii" not in labels
    assert rejects["Training Batch 2/segmentation-99.nii"]["reason"] == "bad_layout"
    assert stats.skipped == {"mask": 2, "macos_resource_fork": 1}


def test_btcv_organ_labels_from_the_label_folder(tmp_path):
    adapter, stats, images, labels, rejects, _, _ = _run("btcv", tmp_path)
    assert adapter.root_used == "RawData"
    assert sorted(a["text"] for a in labels["Training/img/img0001.nii.gz"]) == ["liver", "spleen"]
    assert {r["split"] for u, r in images.items() if u.startswith("Testing/")} == {"test"}
    assert not [u for u in images if "/label/" in u]
    assert rejects["Training/label/label0009.nii.gz"]["reason"] == "bad_layout"
    assert rejects["Training/img/img0003.nii.gz"]["reason"] == "corrupt"


def test_fundus_constituents_header_less_grades_and_file_name_classes(tmp_path):
    _, stats, images, labels, rejects, _, _ = _run("oia_ddr", tmp_path / "ddr")
    split = {u.rsplit("/", 2)[-2]: r["split"] for u, r in images.items()}
    assert split == {"train": "train", "valid": "val", "test": "test"}
    assert labels["DR_grading/train/20170220000010.jpg"][0]["text"] == "no finding"
    assert rejects["DR_grading/train/20170220000099.jpg"]["reason"] == "unknown_label"  # grade 5, ungradable
    assert "not_in_table" not in stats.skipped  # zero counts are not reported
    _, stats, images, labels, rejects, _, _ = _run("hrf", tmp_path / "hrf")
    assert [a["text"] for a in labels["images/01_dr.jpg"]] == ["diabetic retinopathy"]
    assert not [u for u in images if not u.startswith("images/")]  # vessel maps and FOV masks are not images
    assert stats.skipped == {"excluded": 8, "os_metadata": 1}
    assert rejects["images/05_x.jpg"]["reason"] == "unknown_label"


def test_pathvqa_embedded_images_same_rows_in_small_units_on_a_process_pool(tmp_path):
    import polars as pl

    from curator.executors import make_executor
    from curator.stages.ingest import ingest_sources
    from curator.storage import Corpus

    card, path = find_card("pathvqa")
    DATASET_TREES["pathvqa"](tmp_path / "pvqa")

    def rows(out, executor, unit_items):
        settings = IngestSettings(unit_items=unit_items)
        ingest_sources(Corpus(str(out)), [(card, path, tmp_path / "pvqa")], settings, executor, progress=False)
        images = pl.read_parquet(str(out / "index" / "images" / "*.parquet"))
        vqa = pl.read_parquet(str(out / "index" / "annotations" / "*.parquet")).filter(pl.col("kind") == "vqa")
        return sorted(images["sample_id"].to_list()), sorted(vqa["annotation_id"].to_list())

    with make_executor("serial") as serial:
        whole = rows(tmp_path / "one", serial, 256)
    with make_executor("local", workers=2) as pool:
        split = rows(tmp_path / "many", pool, 2)  # a unit per two images: row groups read across units
    assert whole == split and len(whole[0]) == 6 and len(whole[1]) == 9


def test_deepeyenet_one_key_json_rows(tmp_path):
    _, stats, images, _, rejects, _, indexed = _run("deepeyenet", tmp_path)
    assert len(images) == 6
    assert {r["split"] for u, r in images.items() if "/valid_set/" in u} == {"val"}
    captions = [a["text"] for o in indexed for a in o.annotations if a["kind"] == "caption"]
    assert len(captions) == 6 and all("Bone spicule" in c for c in captions)
    assert "one-key JSON object" in rejects["DeepEyeNet_train.json:4"]["message"]
    assert stats.rejects == {"bad_row": 2, "missing_file": 1}
