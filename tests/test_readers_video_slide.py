"""Videos (PyAV) and whole-slide images (tifffile): real files written in the test, read back by the readers."""

from __future__ import annotations

import numpy as np
import pytest
from media_fixtures import break_tile, tissue, write_slide, write_video

from curator.errors import ReadError
from curator.readers import FrameStream, ReadOptions, format_of, read


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mov", ".mkv"])
def test_video_sampled_at_one_frame_a_second_with_index_and_time(tmp_path, suffix):
    path = write_video(tmp_path / f"clip{suffix}")
    assert format_of(path) == "video"
    stream = read(path, ReadOptions())
    assert isinstance(stream, FrameStream)
    frames = list(stream)
    assert [(f.index, f.time_s) for f in frames] == [(0, 0.0), (30, 1.0), (60, 2.0)]
    assert all(f.pixels.shape == (48, 64, 3) and f.pixels.dtype == np.uint8 for f in frames)
    assert frames[0].meta["format"] == "video" and frames[0].meta["duration_s"] == pytest.approx(3.0, abs=0.05)
    assert not stream.part_rejects


def test_higher_rate_and_the_frame_cap_spread_over_the_whole_video(tmp_path):
    path = write_video(tmp_path / "clip.mkv", seconds=4)
    assert len(list(read(path, ReadOptions(video_fps=10)))) == 40
    capped = list(read(path, ReadOptions(video_fps=10, max_frames_per_file=4)))
    assert [f.time_s for f in capped] == [0.0, 1.0, 2.0, 3.0]  # spread, not the first 0.4 s


def test_near_identical_frames_are_skipped_and_counted(tmp_path):
    path = write_video(tmp_path / "still.avi", seconds=2, still=True)
    stream = read(path, ReadOptions(video_fps=10))
    frames = list(stream)
    # the picture changes brightness once, at t = 1 s; the 18 sampled frames in between repeat
    assert [f.time_s for f in frames] == [0.0, 1.0]
    assert stream.skipped["near_duplicate"] == 18
    assert len(list(read(path, ReadOptions(video_fps=10, near_duplicate_mad=0)))) == 20


@pytest.mark.parametrize("suffix", [".avi", ".mp4", ".mkv"])
def test_truncated_video_keeps_the_frames_before_the_damage(tmp_path, suffix):
    path = write_video(tmp_path / f"cut{suffix}", seconds=3)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    stream = read(path, ReadOptions(video_fps=10))
    frames = list(stream)
    assert 5 <= len(frames) < 30
    assert [f.time_s for f in frames] == sorted(f.time_s for f in frames)
    [lost] = stream.part_rejects
    assert lost.reason == "frames_lost" and "s" in lost.message


def test_oversize_and_overlong_videos_rejected_before_decoding(tmp_path):
    path = write_video(tmp_path / "long.avi", seconds=3)
    with pytest.raises(ReadError) as err:
        read(path, ReadOptions(max_video_seconds=2))
    assert err.value.reason == "too_long" and "3 s" in err.value.message
    # Raw video in AVI takes its frame size from the header alone: make the header declare
    # 9000 x 9000 (81 megapixels) over bytes that hold 64 x 48 frames.
    raw = write_video(tmp_path / "raw.avi", seconds=1, codec=("rawvideo", "bgr24"))
    data = bytearray(raw.read_bytes())
    for fourcc in (b"avih", b"strf"):
        at = data.find(fourcc) + 8
        offset = at + (32 if fourcc == b"avih" else 4)  # avih: dwWidth at +32; BITMAPINFOHEADER: biWidth at +4
        data[offset : offset + 8] = (9000).to_bytes(4, "little") * 2
    raw.write_bytes(bytes(data))
    with pytest.raises(ReadError) as err:
        read(raw, ReadOptions())
    assert err.value.reason == "decompression_bomb" and "9000x9000" in err.value.message


def test_not_a_video_is_corrupt(tmp_path):
    path = tmp_path / "fake.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    with pytest.raises(ReadError) as err:
        list(read(path, ReadOptions()))
    assert err.value.reason in ("corrupt", "truncated")


# -- whole-slide images ------------------------------------------------------------------
def test_pyramidal_tiff_is_read_as_tiles_with_level_and_offset(tmp_path):
    path = write_slide(tmp_path / "slide.tif")
    assert format_of(path) == "raster"  # by name; read() looks inside and finds a pyramid
    stream = read(path, ReadOptions())
    tiles = list(stream)
    assert tiles and all(t.pixels.shape == (512, 512, 3) for t in tiles)
    assert {t.tile[0] for t in tiles} == {0}
    offsets = {t.tile[1:] for t in tiles}
    assert (0, 0) in offsets and all(x % 512 == 0 and y % 512 == 0 for x, y in offsets)
    # 4 x 3 tiles at level 0; the glass at the right and bottom is skipped, not indexed
    assert len(tiles) + stream.skipped["background"] == 12 and stream.skipped["background"] >= 4
    assert tiles[0].meta["format"].startswith("slide")


def test_slide_level_and_magnification_choose_the_pyramid_level(tmp_path):
    path = write_slide(tmp_path / "slide.tif", mpp=0.5)  # 0.5 um/px: 20x by the scanners' convention
    level1 = list(read(path, ReadOptions(slide_level=1, tile_size=256)))
    assert level1 and {t.tile[0] for t in level1} == {1}
    ten_x = list(read(path, ReadOptions(slide_magnification=10, tile_size=256)))
    assert {t.tile[0] for t in ten_x} == {1} and ten_x[0].transform["slide"]["level_magnification"] == 10.0
    # 7x: level 1 (10x) read in 366-pixel squares and downsampled to 256
    seven = list(read(path, ReadOptions(slide_magnification=7, tile_size=256)))
    assert seven and all(t.pixels.shape == (256, 256, 3) for t in seven) and {t.tile[0] for t in seven} == {1}
    with pytest.raises(ReadError) as err:
        list(read(path, ReadOptions(slide_level=5)))
    assert err.value.reason == "missing_level"
    with pytest.raises(ReadError) as err:
        list(read(path, ReadOptions(slide_magnification=40)))
    assert err.value.reason == "missing_level" and "20.0x" in err.value.message


def test_a_broken_tile_is_rejected_alone(tmp_path):
    path = write_slide(tmp_path / "slide.tif")
    good = list(read(path, ReadOptions(tile_size=256)))
    assert (0, 512, 512) in {t.tile for t in good}
    break_tile(path, index=2 * 8 + 2)  # the stored tile at (512, 512) of level 0 (8 tiles across), in the tissue
    stream = read(path, ReadOptions(tile_size=256))
    tiles = list(stream)
    [broken] = stream.part_rejects
    assert broken.reason == "tile_corrupt" and "x=512 y=512" in broken.message
    assert len(tiles) == len(good) - 1 and (0, 512, 512) not in {t.tile for t in tiles}


def test_oversize_slide_rejected_before_any_tile_is_decoded(tmp_path):
    path = write_slide(tmp_path / "slide.tif")
    for index in range(12 * 16):  # every stored tile broken: nothing could be decoded anyway
        try:
            break_tile(path, index)
        except IndexError:
            break
    with pytest.raises(ReadError) as err:
        read(path, ReadOptions(max_slide_pixels=1_000_000))
    assert err.value.reason == "decompression_bomb" and "2048x1536" in err.value.message


def test_slide_tiles_never_hold_the_whole_slide(tmp_path, monkeypatch):
    """No call decodes a whole level: TiffPage.asarray is used only for the small tissue map."""
    import tifffile

    path = write_slide(tmp_path / "slide.tif")
    sizes = []
    real = tifffile.TiffPage.asarray

    def spy(self, *a, **k):
        sizes.append(self.imagewidth * self.imagelength)
        return real(self, *a, **k)

    monkeypatch.setattr(tifffile.TiffPage, "asarray", spy)
    assert list(read(path, ReadOptions()))
    assert max(sizes, default=0) <= 512 * 384  # the smallest level only


def test_small_tiled_tiff_stays_a_raster(tmp_path):
    import tifffile

    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.full((300, 300), 7, np.uint8) + np.eye(300, dtype=np.uint8), tile=(256, 256))
    [frame] = read(path, ReadOptions())
    assert frame.tile is None and frame.pixels.shape == (300, 300)


def test_aperio_appmag_sets_the_magnification(tmp_path):
    """An .svs names its objective power in the ImageDescription (AppMag); that wins over the pixel size."""
    import tifffile

    path = tmp_path / "slide.svs"
    base = tissue(1024, 1536)
    with tifffile.TiffWriter(path) as tw:
        tw.write(
            base,
            tile=(256, 256),
            compression="jpeg",
            description="Aperio Image Library v12\n1536x1024 |AppMag = 40|MPP = 0.25",
        )
        tw.write(base[::4, ::4], tile=(256, 256), compression="jpeg", subfiletype=1)
    assert format_of(path) == "slide"
    tiles = list(read(path, ReadOptions(slide_magnification=10, tile_size=256)))
    assert tiles and {t.tile[0] for t in tiles} == {1}
    assert tiles[0].transform["slide"]["level_magnification"] == 10.0
