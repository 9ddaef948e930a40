"""Videos and slides through an adapter, the index and trace: frames carry their second, tiles their place."""

from __future__ import annotations

import pytest
from helpers import run
from media_fixtures import break_tile, write_slide, write_video

from curator.adapters.base import Indexed, Rejected, Stats
from curator.config import IngestSettings
from curator.registry import adapter_class, adhoc_card


def _ingest(root, **image):
    card = adhoc_card(
        "class_folders", root, params={"levels": ["label"]}, modality="endoscopy", anatomy="colon", image=image
    )
    stats = Stats()
    out = list(adapter_class("class_folders")(card, root).run(IngestSettings(), stats))
    return stats, [o for o in out if isinstance(o, Indexed)], [o for o in out if isinstance(o, Rejected)]


def test_a_class_folder_tree_of_videos(tmp_path):
    write_video(tmp_path / "polyp" / "a.avi", seconds=3)
    write_video(tmp_path / "polyp" / "b.mp4", seconds=2, seed=1)
    write_video(tmp_path / "normal" / "still.mkv", seconds=2, still=True)
    cut = write_video(tmp_path / "normal" / "cut.avi", seconds=3, seed=2)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 6 // 10])
    stats, indexed, rejected = _ingest(tmp_path, format="jpeg", video_fps=2)
    rows = {o.item.uri: o.images for o in indexed}
    assert [(r["frame_index"], r["frame_time_s"]) for r in rows["polyp/a.avi"]] == [(i * 15, i * 0.5) for i in range(6)]
    assert all(r["original_format"] == "video" and r["tile_level"] is None for r in rows["polyp/a.avi"])
    # the still video: only the brightness step at 1 s is new
    assert [r["frame_time_s"] for r in rows["normal/still.mkv"]] == [0.0, 1.0]
    assert stats.skipped_frames["near_duplicate"] == 2
    # the cut video: its first 1.5 s indexed, the rest one frames_lost row; the file counts as indexed
    assert 2 <= len(rows["normal/cut.avi"]) < 6
    [lost] = [r.row for r in rejected if r.part]
    assert lost["original_uri"] == "normal/cut.avi" and lost["reason"] == "frames_lost"
    assert stats.seen == stats.indexed_items == 4 and stats.part_rejects == {"frames_lost": 1}
    ids = [r["sample_id"] for images in rows.values() for r in images]
    assert len(ids) == len(set(ids))


def test_a_class_folder_tree_of_slides(tmp_path):
    write_slide(tmp_path / "tumor" / "t1.tif", seed=1)
    break_tile(write_slide(tmp_path / "normal" / "n1.tif", seed=2), index=2 * 8 + 2)
    stats, indexed, rejected = _ingest(tmp_path, format="jpeg", tile_size=256)
    rows = {o.item.uri: o.images for o in indexed}
    tiles = {(r["tile_level"], r["tile_x"], r["tile_y"]) for r in rows["tumor/t1.tif"]}
    assert (0, 512, 512) in tiles and all(r["frame_index"] is None for r in rows["tumor/t1.tif"])
    assert (0, 512, 512) not in {(r["tile_level"], r["tile_x"], r["tile_y"]) for r in rows["normal/n1.tif"]}
    [broken] = [r.row for r in rejected if r.part]
    assert broken["reason"] == "tile_corrupt" and broken["original_uri"] == "normal/n1.tif"
    assert "x=512 y=512" in broken["message"]
    assert stats.skipped_frames["background"] > 0
    assert rows["tumor/t1.tif"][0]["transform"]["slide"]["level"] == 0


@pytest.mark.slow
def test_trace_names_the_second_and_the_tile(tmp_path):
    root = tmp_path / "src"
    write_video(root / "polyp" / "a.mp4", seconds=3)
    write_slide(root / "tumor" / "s.tif")
    out = tmp_path / "corpus"
    args = ["--adapter", "class_folders", "--root", str(root), "--out", str(out), "--id", "mixed"]
    result = run("ingest", *args, "--modality", "endoscopy", "--anatomy", "colon", "--param", 'levels=["label"]')
    assert result.exit_code == 0, result.output
    assert "mixed: frames/tiles skipped background=" in result.output
    assert run("index", "--out", str(out)).exit_code == 0
    import duckdb

    images = f"read_parquet('{out}/index/images/*.parquet')"
    [(second,)] = duckdb.sql(f"SELECT sample_id FROM {images} WHERE frame_time_s = 2.0").fetchall()
    [(tile_id, x, y)] = duckdb.sql(
        f"SELECT sample_id, tile_x, tile_y FROM {images} WHERE tile_level = 0 LIMIT 1"
    ).fetchall()
    traced = run("trace", second, "--out", str(out))
    assert traced.exit_code == 0 and "polyp/a.mp4  frame 60  at 0:00:02.000 (2.000 s)" in traced.output
    traced = run("trace", tile_id, "--out", str(out))
    assert f"tumor/s.tif  tile level 0 at x={x} y={y}" in traced.output
