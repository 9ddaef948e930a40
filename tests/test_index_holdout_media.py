"""Hold-out folders may hold videos and whole-slide images: their first frame gets a perceptual hash.

Readers decode those lazily (a FrameStream, not a list), so the hold-out loader takes
the stream's first frame; indexing a stream like a list used to crash the index step.
"""

from __future__ import annotations

from media_fixtures import write_slide, write_video
from PIL import Image

from curator.config import HoldoutSettings
from curator.imaging import normalise
from curator.readers import FrameStream, read
from curator.registry import ImagePolicy
from curator.stages.index import load_benchmarks


def test_video_and_slide_hold_outs_get_the_phash_of_their_first_frame(tmp_path):
    bench = tmp_path / "bench"
    video = write_video(bench / "clip.mp4", seconds=2.0)
    slide = write_slide(bench / "slide.svs")
    Image.new("L", (32, 32), 128).save(bench / "flat.png")  # a blank image: no phash, matched by sha256 only
    got = {b.item: b.phash for b in load_benchmarks(HoldoutSettings(folders=[str(bench)]))}
    assert set(got) == {"clip.mp4", "slide.svs", "flat.png"}
    for path in (video, slide):
        stream = read(path)
        assert isinstance(stream, FrameStream)  # the case that broke: no len(), no [0]
        first = next(iter(stream))
        assert got[path.name] == normalise(first, ImagePolicy()).phash
        assert len(got[path.name]) == 16
    assert got["flat.png"] is None
