"""Video files (MP4, M4V, AVI, MOV, MKV, WebM) through PyAV, one sampled frame at a time.

Why PyAV: a maintained binding of FFmpeg (BSD-3-Clause) with wheels for every
platform, so no system FFmpeg is needed; it gives each frame's exact presentation
time (pts x time base), the declared frame size and duration before a packet is
decoded, and decode errors as exceptions, so a damaged file keeps the frames before
the damage. OpenCV's VideoCapture hides decode errors and reports approximate times.

Policy (curator.readers.sampling and curator.registry.ImagePolicy): frames sampled
at ``video_fps`` from t = 0, at most ``max_frames_per_file`` over the whole duration,
near-identical consecutive frames skipped and counted (``near_duplicate``). Before
decoding: a declared frame over 64 megapixels is a ``decompression_bomb`` and a
declared duration over ``max_video_seconds`` is ``too_long``. A file whose decoding
stops early (damage, truncation: FFmpeg either raises or simply runs out of frames
before the declared duration) keeps the frames before and reports the rest as a
``frames_lost`` part reject. Frames leave as 8-bit RGB (greyscale streams as grey).
Container metadata (titles, comments, creation times) is never read.
"""

from __future__ import annotations

from pathlib import Path

from curator.errors import ReadError
from curator.readers import Frame, FrameStream, PartReject, ReadOptions
from curator.readers.sampling import TimeSampler

# The raster limit: no real endoscopy, ultrasound or surgical frame comes near it.
MAX_PIXELS = 64_000_000
_GREY = {"gray", "gray8", "gray10le", "gray12le", "gray16le", "gray16be", "ya8"}


def read_video(path: Path, options: ReadOptions) -> FrameStream:
    import av

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise ReadError("corrupt", f"not a readable video: {exc}") from None
    try:
        if not container.streams.video:
            raise ReadError("no_pixels", f"no video stream in this {container.format.name} file")
        stream = container.streams.video[0]
        width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        if width * height > MAX_PIXELS:
            raise ReadError("decompression_bomb", f"declared frame {width}x{height} exceeds {MAX_PIXELS} pixels")
        if width * height == 0:
            raise ReadError("corrupt", "the video stream declares no frame size")
        duration = _duration(container, stream)
        if duration is not None and duration > options.max_video_seconds:
            raise ReadError(
                "too_long",
                f"declared duration {duration:.0f} s exceeds max_video_seconds {options.max_video_seconds:.0f}",
            )
    except ReadError:
        container.close()
        raise
    rate = float(stream.average_rate) if stream.average_rate else None
    meta = {
        "format": "video",
        "container": container.format.name.split(",")[0],
        "codec": stream.codec_context.name,
        "duration_s": None if duration is None else round(duration, 3),
        "fps": None if rate is None else round(rate, 3),
    }

    def frames(fs: FrameStream):
        sampler = TimeSampler(options, duration, frame_period=1.0 / rate if rate else None)
        index, t, kept = -1, 0.0, 0
        start = stream.start_time or 0
        with container:
            try:
                for frame in container.decode(stream):
                    index += 1
                    if frame.pts is not None and stream.time_base is not None:
                        t = float((frame.pts - start) * stream.time_base)
                    elif rate:
                        t = index / rate
                    if t > options.max_video_seconds:
                        fs.part_rejects.append(
                            PartReject("too_long", f"frames after {options.max_video_seconds:.0f} s not read")
                        )
                        return
                    if not sampler.due(t):
                        continue
                    if sampler.full:
                        fs.skipped["frame_limit"] += 1
                        continue
                    grey = frame.format.name in _GREY
                    pixels = frame.to_ndarray(format="gray" if grey else "rgb24")
                    if sampler.repeats(pixels):
                        fs.skipped["near_duplicate"] += 1
                        continue
                    kept += 1
                    sampling = {"fps": options.video_fps, "every_s": round(sampler.interval, 4)}
                    yield Frame(
                        pixels=pixels, index=index, time_s=round(t, 3), meta=meta, transform={"video": sampling}
                    )
            except (av.FFmpegError, ValueError, OSError) as exc:
                if not kept:
                    raise ReadError("corrupt", f"no frame decodes: {exc}") from None
                fs.part_rejects.append(
                    PartReject("frames_lost", f"decoding stopped after frame {index} at {t:.2f} s: {exc}")
                )
                return
        if index < 0:
            raise ReadError("truncated", "the video stream holds no decodable frame")
        # FFmpeg often conceals damage and just stops: compare with the declared duration.
        step = 1.0 / rate if rate else 0.0
        if duration is not None and t + 2 * step + 0.5 < duration:
            fs.part_rejects.append(
                PartReject(
                    "frames_lost", f"frames end at {t:.2f} s of a declared {duration:.2f} s (truncated or damaged)"
                )
            )

    return FrameStream(frames)


def _duration(container, stream) -> float | None:
    """Declared duration in seconds: the longest of what the stream, its frame count and the container say.

    The longest, because a truncated file's demuxer may shorten one of them (AVI without
    its index) while the header's frame count still tells how long the video was.
    """
    import av

    rate = float(stream.average_rate) if stream.average_rate else None
    said = []
    if stream.duration is not None and stream.time_base is not None:
        said.append(float(stream.duration * stream.time_base))
    if stream.frames and rate:
        said.append(stream.frames / rate)
    if container.duration is not None:
        said.append(container.duration / av.time_base)
    return max(said) if said else None
