"""A pydicom decoder plugin over imagecodecs, for the frames pydicom's own plugins refuse.

pydicom tries a syntax's plugins in the order they were added and stops at the
first that succeeds, so registering this one *last* makes it a fallback: gdcm,
pylibjpeg-openjpeg, pylibjpeg-rle and pyjpegls keep decoding what they decode, and
imagecodecs (BSD-3-Clause; libjpeg-turbo, CharLS and OpenJPEG inside, all
permissive) takes what they refuse. The one that matters today is 12-bit JPEG
Extended (1.2.840.10008.1.2.4.51): gdcm refuses it and the only other decoder,
pylibjpeg-libjpeg, is GPLv3. libjpeg-turbo 3 decodes 8-, 12- and 16-bit lossy and
lossless JPEG, so it also stands behind JPEG Lossless (processes 14 and 14 SV1).

Contract (pydicom's decoder-plugin interface): ``is_available(uid)``,
``DECODER_DEPENDENCIES`` and ``_decode_frame(src, runner) -> bytes`` returning the
frame as pixel-interleaved native-endian samples in a container of
``runner.bits_allocated`` bits; options we change (photometric after a YCbCr->RGB
conversion, planar configuration, container size) are set on the runner.
"""

from __future__ import annotations

import numpy as np
from pydicom import uid
from pydicom.pixels.common import PhotometricInterpretation as PI

try:
    import imagecodecs
except ImportError:  # pragma: no cover - imagecodecs is a dependency; without it the plugin is unavailable
    imagecodecs = None

LABEL = "imagecodecs"

# Which imagecodecs decoder handles each syntax.
_CODEC = {
    uid.JPEGBaseline8Bit: "jpeg8",
    uid.JPEGExtended12Bit: "jpeg8",
    uid.JPEGLossless: "jpeg8",
    uid.JPEGLosslessSV1: "jpeg8",
    uid.JPEGLSLossless: "jpegls",
    uid.JPEGLSNearLossless: "jpegls",
    uid.JPEG2000Lossless: "jpeg2k",
    uid.JPEG2000: "jpeg2k",
    uid.HTJ2KLossless: "jpeg2k",
    uid.HTJ2KLosslessRPCL: "jpeg2k",
    uid.HTJ2K: "jpeg2k",
}

DECODER_DEPENDENCIES = {ts: ("imagecodecs>=2024.1",) for ts in _CODEC}


def is_available(ts: str) -> bool:
    return imagecodecs is not None and ts in _CODEC and getattr(imagecodecs, _CODEC[ts].upper()).available


def _decode_frame(src: bytes, runner) -> bytes:
    ts = runner.transfer_syntax
    codec = _CODEC[ts]
    photometric = runner.photometric_interpretation
    if codec == "jpeg8":
        # libjpeg-turbo assumes a 3-component stream without JFIF/Adobe markers is YCbCr; a DICOM
        # header saying RGB about such a stream means it was stored without colour transform.
        kwargs = {}
        if photometric == PI.RGB and runner.samples_per_pixel == 3 and _stored_as_rgb(src):
            kwargs = {"colorspace": "RGB", "outcolorspace": "RGB"}
        arr = imagecodecs.jpeg8_decode(src, **kwargs)
        if runner.samples_per_pixel == 3 and photometric in (PI.YBR_FULL, PI.YBR_FULL_422):
            runner.set_option("photometric_interpretation", PI.RGB)
    elif codec == "jpegls":
        arr = imagecodecs.jpegls_decode(src)
    else:
        arr = imagecodecs.jpeg2k_decode(src)
        if photometric in (PI.YBR_ICT, PI.YBR_RCT):
            runner.set_option("photometric_interpretation", PI.RGB)
    arr = np.asarray(arr)
    if arr.shape[:2] != (runner.rows, runner.columns):
        raise ValueError(
            f"imagecodecs decoded {arr.shape[1]}x{arr.shape[0]}, header says {runner.columns}x{runner.rows}"
        )
    runner.set_option("planar_configuration", 0)  # imagecodecs returns samples interleaved (H, W, S)
    bits = arr.dtype.itemsize * 8
    if bits != runner.bits_allocated:
        runner.set_option("bits_allocated", bits)
    if runner.pixel_representation == 1 and arr.dtype.kind == "u":
        arr = arr.view(arr.dtype.str.replace("u", "i"))
    return arr.astype(arr.dtype.newbyteorder("="), copy=False).tobytes()


def _stored_as_rgb(src: bytes) -> bool:
    """Is a 3-component JPEG stream stored without colour transform (for a header that says RGB)?

    An Adobe APP14 marker states it (transform 0 = RGB); a JFIF APP0 marker means YCbCr;
    with neither (or a malformed APP14, as in pydicom's SC_rgb_jpeg.dcm) the header decides.
    """
    head = bytes(src[:65536])
    at = head.find(b"\xff\xee")
    while at >= 0:
        length = int.from_bytes(head[at + 2 : at + 4], "big")
        if head[at + 4 : at + 9] == b"Adobe" and length >= 12 + 2 and at + 15 < len(head):
            return head[at + 15] == 0
        at = head.find(b"\xff\xee", at + 2)
    return b"JFIF\x00" not in head


def register() -> list[str]:
    """Add this plugin, last, to every syntax it covers; returns the syntaxes newly covered. Idempotent."""
    from pydicom.pixels import get_decoder

    added = []
    for ts in _CODEC:
        decoder = get_decoder(ts)
        if LABEL in decoder._available or LABEL in decoder._unavailable:
            continue
        decoder.add_plugin(LABEL, (__name__, "_decode_frame"))
        added.append(str(ts))
    return added
