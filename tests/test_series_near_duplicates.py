"""Series-aware near-duplicates: adjacent slices of one series look alike but are not copies."""

from __future__ import annotations

import numpy as np
import polars as pl
from dicom_fixtures import make_dicom

from curator.config import DuplicateSettings, HoldoutSettings, IngestSettings
from curator.registry import adhoc_card
from curator.stages.index import run_index
from curator.stages.ingest import ingest_source
from curator.storage import Corpus


def _slices(folder, series_uid: str, n: int, seed: int, z0: float = 0.0):
    rng = np.random.default_rng(seed)
    ramp = np.tile(np.arange(64, dtype=np.float64) * 40, (64, 1))
    for k in range(n):
        pixels = (ramp + rng.normal(0, 2, ramp.shape)).clip(0, 4000).astype(np.uint16)
        make_dicom(
            folder / f"IM{k:04d}",
            pixels,
            SeriesInstanceUID=series_uid,
            ImagePositionPatient=[0.0, 0.0, z0 + 2.5 * k],
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            InstanceNumber=k + 1,
        )


def test_slices_of_one_series_are_never_near_duplicates_of_each_other(tmp_path):
    root = tmp_path / "export"
    _slices(root / "SERIES1", "1.2.826.0.1.3680043.8.498.1", 20, seed=1)
    _slices(root / "SERIES2", "1.2.826.0.1.3680043.8.498.2", 1, seed=2, z0=100.0)  # another series, same look
    card = adhoc_card("dicom_folder", root, source_id="series_demo", modality="CT", anatomy="chest")
    corpus = Corpus(str(tmp_path / "corpus"))
    card_path = tmp_path / "series_demo.json"
    card_path.write_text(card.model_dump_json())
    result = ingest_source(corpus, card, card_path, root, IngestSettings(), progress=False)
    assert result.stats.images == 21
    index = run_index(corpus, DuplicateSettings(near_action="drop"), HoldoutSettings())
    images = pl.read_parquet(str(tmp_path / "corpus" / "index" / "images" / "*.parquet"))
    series1 = images.filter(pl.col("original_uri").str.starts_with("SERIES1"))
    assert series1["series_key"].n_unique() == 1 and series1["series_key"][0] is not None
    assert "1.2.826" not in str(series1["series_key"][0])  # a keyed hash, never the UID
    assert sorted(series1["slice_position"].to_list()) == [2.5 * k for k in range(20)]
    samples = pl.read_parquet(str(tmp_path / "corpus" / "index" / "samples" / "*.parquet"))
    dropped = samples.filter(pl.col("status") == "near_duplicate")
    in_series1 = set(series1["sample_id"].to_list())
    # with near_action = "drop", no slice of series 1 is lost to another slice of it; the lone
    # slice of series 2 (another acquisition that looks the same) is still found
    assert index.near_pairs == index.near_dropped == dropped.height == 1
    [(other, keeper)] = dropped.select("sample_id", "duplicate_of").rows()
    assert not ({other, keeper} <= in_series1)
