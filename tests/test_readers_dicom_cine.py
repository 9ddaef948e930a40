"""Multi-frame DICOM cine follows the video policy; multi-frame volumes keep the slice policy."""

from __future__ import annotations

import numpy as np
from dicom_fixtures import PYDICOM_FILES, make_dicom

from curator.readers import FrameStream, ReadOptions, read


def _cine(tmp_path, n=100, **attrs):
    """n frames of a bar that moves one row per frame; 10 frames a second by Frame Time."""
    frames = np.zeros((n, 32, 32), np.uint16)
    for i in range(n):
        frames[i, i % 32, :] = 1000
        frames[i, :, 0] = 500  # a fixed edge so every frame has contrast
    return make_dicom(tmp_path / "cine.dcm", frames, modality="US", **attrs)


def test_cine_sampled_by_frame_time(tmp_path):
    path = _cine(tmp_path, FrameTime=100.0)
    stream = read(path, ReadOptions(), fmt="dicom")
    assert isinstance(stream, FrameStream)
    frames = list(stream)
    assert [(f.index, f.time_s) for f in frames] == [(i * 10, float(i)) for i in range(10)]
    assert frames[0].transform["cine"]["fps"] == 1.0


def test_cine_frame_cap_spreads_over_the_loop_and_frame_time_vector_counts(tmp_path):
    path = _cine(tmp_path, FrameTimeVector=[0.0] + [100.0] * 99)
    frames = list(read(path, ReadOptions(video_fps=10, max_frames_per_file=5), fmt="dicom"))
    assert [f.index for f in frames] == [0, 20, 40, 60, 80]


def test_a_real_ultrasound_cine_skips_its_near_identical_frames():
    """pydicom's examples_ybr_color.dcm: 30 frames of 33.3 ms; at 30 frames a second most repeat."""
    stream = read(PYDICOM_FILES / "examples_ybr_color.dcm", ReadOptions(video_fps=30), fmt="dicom")
    frames = list(stream)
    assert frames[0].index == 0 and frames[0].time_s == 0.0 and frames[0].pixels.shape == (240, 320, 3)
    assert len(frames) + stream.skipped["near_duplicate"] == 30 and stream.skipped["near_duplicate"] > 0
    assert len(list(read(PYDICOM_FILES / "examples_ybr_color.dcm", ReadOptions(), fmt="dicom"))) == 1


def test_multiframe_without_frame_times_keeps_the_slice_policy(tmp_path):
    path = _cine(tmp_path, n=12)
    frames = read(path, ReadOptions(slice_step=3), fmt="dicom")
    assert isinstance(frames, list) and [f.index for f in frames] == [0, 3, 6, 9]
    assert all(f.time_s is None for f in frames)
