"""Blobs: each encoded image stored once, addressed by the sha256 of its bytes.

``blobs/<sha[:2]>/<sha>.<ext>``, one object per image. Measured on the loopback
S3 server (``bench/bench_blobs.py``, figures in the README) against packs; the
figures and the choice are written there. Ingest writes a blob through
:func:`write_blob`, the sharder reads it through :func:`read_blob` (hash-checked
before a byte is copied), ``verify`` and ``trace`` find it through :func:`blob_path`.
"""

from __future__ import annotations

import hashlib

from curator.errors import CorpusError
from curator.storage import Corpus


def blob_path(sha256: str, ext: str) -> str:
    return f"blobs/{sha256[:2]}/{sha256}.{ext}"


def blob_ext(image_format: str | None) -> str:
    """The file extension a blob (and its shard member) carries for an images.image_format."""
    return "png" if image_format == "png" else "jpg"


def write_blob(corpus: Corpus, sha256: str, ext: str, data: bytes) -> str:
    """Store an encoded image under its hash (a blob already there is the same bytes: not rewritten)."""
    rel = blob_path(sha256, ext)
    if not corpus.exists(rel):
        corpus.write_bytes(rel, data)
    return rel


def read_blob(corpus: Corpus, sha256: str, ext: str, source: str | None = None) -> bytes:
    """A blob's bytes, checked against the sha256 that names it; a bad blob says which source to re-ingest."""
    rel = blob_path(sha256, ext)
    source = source or "?"
    remedy = f"re-ingest source '{source}': delete _markers/ingest/{source}.json and re-run `curator build`"
    try:
        data = corpus.read_bytes(rel)
    except FileNotFoundError:
        raise CorpusError(f"blob {rel} (source '{source}') is missing: {remedy}") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise CorpusError(f"blob {rel} (source '{source}') does not hash to its image_sha256: {remedy}")
    return data
