"""Blobs on object storage: one object per image against packs, on a loopback S3 server (moto).

``IMAGES`` distinct images of ``IMAGE_BYTES`` (a small 8-bit PNG's size) go to a
bucket on moto's threaded server on 127.0.0.1, through the same s3fs path the
corpus uses:

* one object per image, as ingest writes them today (``write_blob``: an existence
  check, then one PUT) and as the sharder reads them (one GET each), one request
  at a time and with ``THREADS`` in flight (a pool of workers);
* packs of ``PACK`` images (one tar per ingest unit, one multipart upload), read
  back whole (a shard unit streaming a pack) and by byte range (``trace``-style
  access to one image);
* the real code path, ``curator.blobs``: ``PackWriter`` per unit of ``PACK`` images
  (pack + ``blob_packs`` part), then ``read_blobs`` in batches of the sharder's
  ``READ_BATCH``, in pack order and in a seeded shuffle (a cross-source shard reads
  images from many packs), with the ratio to one object per image.

Figures are images/s and MB/s, and the hours 5.5 million images take at that
rate. moto is slower per request than S3 itself, so the ratio between layouts is
the figure to read, not the absolute rate.

Then the shard stage itself on the S3 corpus (``SHARD_IMAGES`` noise PNGs in ingest
units of ``SHARD_UNIT``, so many more packs than a read batch has images, as at
scale): ``curator.stages.shard.run_shard`` with the per-sample shuffle
(``shuffle_block = 1``) and the default pack-aware one, counting the GET requests
moto answers on ``blobs/packs/`` (from its request log), with the stage's wall
time and how many packs a shard and a 256-sample window of it draw from.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from curator import blobs
from curator.blobs import PackWriter, blob_path, read_blobs
from curator.stages.shard.work import READ_BATCH
from curator.storage import Corpus
from curator.tables import connect

IMAGES = 1500
SHARD_IMAGES = 4096
SHARD_UNIT = 32
IMAGE_BYTES = 32 * 1024
PACK = 500
THREADS = 8
GMAI = 5_500_000
BUCKET = "curator-bench"


@contextmanager
def loopback_s3():
    """moto's S3 server on 127.0.0.1 with the AWS_* variables s3fs reads; everything restored after."""
    import fsspec
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "NO_PROXY": "127.0.0.1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        fsspec.filesystem("s3").clear_instance_cache()
        fsspec.filesystem("s3", skip_instance_cache=True).mkdir(BUCKET)
        yield f"s3://{BUCKET}"
    finally:
        fsspec.filesystem("s3").clear_instance_cache()
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class RequestLog(logging.Handler):
    """Counts the requests moto's server answers, by method and path, from werkzeug's request log."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.args:  # "GET /bucket/key?... HTTP/1.1", colour codes around some statuses' lines
            self.lines.append(re.sub(r"\x1b\[[0-9;]*m", "", str(record.args[0])))

    def count(self, method: str, part: str) -> int:
        return sum(1 for line in self.lines if line.startswith(f"{method} ") and part in line)


@contextmanager
def requests_logged():
    logger = logging.getLogger("werkzeug")
    handler, level, propagate, others = RequestLog(), logger.level, logger.propagate, list(logger.handlers)
    for other in others:  # werkzeug's own console handler: the requests are counted, not printed
        logger.removeHandler(other)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        for other in others:
            logger.addHandler(other)
        logger.setLevel(level)
        logger.propagate = propagate


def _shard_corpus(workdir: Path) -> Path:
    """A local folder-per-class corpus of noise PNGs, ingested in small units (many packs) and indexed."""
    from PIL import Image

    from curator.config import DuplicateSettings, HoldoutSettings, IngestSettings
    from curator.registry import find_card
    from curator.stages.index import run_index
    from curator.stages.ingest import ingest_source

    rng = np.random.default_rng(0)
    root = workdir / "source"
    for i in range(SHARD_IMAGES):
        path = root / "radiology_ai" / "CT" / "lung" / ("normal", "nodule")[i % 2] / f"img{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(path)
    card, card_path = find_card("demo_radimagenet", Path(__file__).resolve().parent.parent / "source_registry")
    out = workdir / "corpus"
    corpus = Corpus(str(out))
    ingest_source(corpus, card, card_path, root, IngestSettings(unit_items=SHARD_UNIT), progress=False)
    run_index(corpus, DuplicateSettings(), HoldoutSettings())
    return out


def shard_stage_on_s3(workdir: Path, url: str) -> list[tuple[str, float, str]]:
    """The real shard stage on the S3 corpus: GETs per image and time, per-sample against pack-aware shuffle."""
    import fsspec
    import polars as pl

    from curator.config import ShardSettings
    from curator.executors import make_executor
    from curator.stages.shard import run_shard

    local = _shard_corpus(workdir)
    fsspec.filesystem("s3").put(str(local), f"{url}/shard-corpus", recursive=True)
    corpus = Corpus(f"{url}/shard-corpus")
    con = connect(Corpus(str(local)), ["images", blobs.TABLE])
    pack_of = pl.from_arrow(
        con.sql(f"SELECT i.sample_id, l.pack FROM images i JOIN ({blobs.LOCATIONS_SQL}) l USING (image_sha256)").arrow()
    )
    con.close()
    packs = len(corpus.fs.ls(corpus.path(blobs.PACKS)))
    figures = [(f"shard stage on S3: {SHARD_IMAGES} images in {packs} packs", packs, "packs")]
    for label, block in (("per-sample shuffle", 1), ("pack-aware shuffle", ShardSettings().shuffle_block)):
        settings = ShardSettings(max_samples=1024, shuffle_block=block)
        with requests_logged() as log, make_executor("serial") as executor:
            t = time.perf_counter()
            result = run_shard(corpus, settings, f"b{block}", progress=False, executor=executor)
            seconds = time.perf_counter() - t
        gets = log.count("GET", f"/{blobs.PACKS}/")
        with corpus.fs.open(corpus.path("index/shards/part-manifest.parquet"), "rb") as fh:
            manifest = pl.read_parquet(fh).with_row_index("i")
        drawn = manifest.join(pack_of, on="sample_id").sort("i")
        per_shard = drawn.group_by("shard_url").agg(pl.col("pack").n_unique())["pack"].mean()
        window = pl.col("i") - pl.col("i").min().over("shard_url")
        per_window = drawn.group_by("shard_url", window // READ_BATCH).agg(pl.col("pack").n_unique())["pack"].mean()
        images = manifest.height
        name = f"{label} (block {block})"
        figures.append((f"{name}: GETs of packs per image", gets / images, "GETs"))
        figures.append((f"{name}: shard stage ({len(result.shards)} shards)", images / seconds, "images/s"))
        figures.append((f"{name}: packs per shard / per {READ_BATCH}-sample window", per_shard, f"/ {per_window:.1f}"))
    return figures


def write_blob(corpus: Corpus, sha256: str, ext: str, data: bytes) -> None:
    """One object per image, as ingest wrote blobs before packs: an existence check, then one PUT."""
    rel = blob_path(sha256, ext)
    if not corpus.exists(rel):
        corpus.write_bytes(rel, data)


def _images() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(IMAGES):
        data = rng.integers(0, 256, IMAGE_BYTES, dtype=np.uint8).tobytes()
        out.append((hashlib.sha256(data).hexdigest(), data))
    return out


def _pack(images: list[tuple[str, bytes]]) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """A tar of images named by sha256, and each image's (offset, size) in it."""
    buf = io.BytesIO()
    where = {}
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for sha, data in images:
            info = tarfile.TarInfo(f"{sha}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            member = tar.getmember(f"{sha}.png")
            where[sha] = (member.offset_data, len(data))
    return buf.getvalue(), where


def run(workdir: Path) -> list[tuple[str, float, str]]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    images = _images()
    mb = IMAGES * IMAGE_BYTES / 1e6
    figures = []

    def rate(label: str, seconds: float) -> None:
        per_s = IMAGES / seconds
        figures.append((f"{label}", per_s, "images/s"))
        figures.append((f"{label}: MB/s", mb / seconds, "MB/s"))
        figures.append((f"{label}: 5.5M images", GMAI / per_s / 3600, "hours"))

    with loopback_s3() as url:
        corpus = Corpus(f"{url}/objects")
        t = time.perf_counter()
        for sha, data in images:
            write_blob(corpus, sha, "png", data)
        rate("one object per image, write, 1 in flight", time.perf_counter() - t)
        t = time.perf_counter()
        for sha, _ in images:
            corpus.read_bytes(blob_path(sha, "png"))
        rate("one object per image, read, 1 in flight", time.perf_counter() - t)

        threaded = Corpus(f"{url}/threaded")
        with ThreadPoolExecutor(THREADS) as pool:
            t = time.perf_counter()
            list(pool.map(lambda im: write_blob(threaded, im[0], "png", im[1]), images))
            rate(f"one object per image, write, {THREADS} in flight", time.perf_counter() - t)
            t = time.perf_counter()
            list(pool.map(lambda im: threaded.read_bytes(blob_path(im[0], "png")), images))
            rate(f"one object per image, read, {THREADS} in flight", time.perf_counter() - t)

        packed = Corpus(f"{url}/packed")
        index: dict[str, tuple[str, int, int]] = {}
        t = time.perf_counter()
        for i in range(0, IMAGES, PACK):
            data, where = _pack(images[i : i + PACK])
            rel = f"packs/unit-{i // PACK:05d}.tar"
            with packed.open_atomic(rel) as fh:
                fh.write(data)
            index.update({sha: (rel, off, n) for sha, (off, n) in where.items()})
        rate(f"packs of {PACK}, write, 1 in flight", time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(0, IMAGES, PACK):
            packed.read_bytes(f"packs/unit-{i // PACK:05d}.tar")
        rate(f"packs of {PACK}, read whole, 1 in flight", time.perf_counter() - t)
        t = time.perf_counter()
        for sha, _ in images:
            rel, off, n = index[sha]
            packed.fs.cat_file(packed.path(rel), start=off, end=off + n)
        rate(f"packs of {PACK}, read by range, 1 in flight", time.perf_counter() - t)

        # the real code path: what ingest and the sharder run
        real = Corpus(f"{url}/curator")
        t = time.perf_counter()
        for i in range(0, IMAGES, PACK):
            with PackWriter(real, f"bench-{i // PACK:06d}") as pack:
                for sha, data in images[i : i + PACK]:
                    pack.add(sha, "png", data)
        write_s = time.perf_counter() - t
        rate(f"curator.blobs PackWriter, units of {PACK}", write_s)
        refs = blobs.refs(connect(real, [blobs.TABLE]), [(sha, "png", "bench") for sha, _ in images])
        shuffled = [refs[i] for i in np.random.default_rng(1).permutation(len(refs))]
        reads = {}
        # "scattered": no two images of a batch share a request, as in a shuffled shard of a 5.5M
        # corpus (its images come from about as many packs as it has images); this bench's 3 packs
        # show that only with merging turned off. Each batch's requests are still in flight together.
        gap = blobs.MERGE_GAP_REMOTE
        cases = (("pack order", refs, gap), ("shuffled", shuffled, gap), ("scattered", shuffled, -1))
        for label, order, merge in cases:
            blobs.MERGE_GAP_REMOTE = merge
            t = time.perf_counter()
            for j in range(0, IMAGES, READ_BATCH):
                read_blobs(real, order[j : j + READ_BATCH])
            reads[label] = time.perf_counter() - t
            rate(f"curator.blobs read_blobs, {label}, batches of {READ_BATCH}", reads[label])
        blobs.MERGE_GAP_REMOTE = gap
        per_image = {f[0]: f[1] for f in figures}
        one_write = per_image["one object per image, write, 1 in flight"]
        one_read = per_image["one object per image, read, 1 in flight"]
        figures.append(("ratio write: curator.blobs / one object per image", IMAGES / write_s / one_write, "x"))
        for label, seconds in reads.items():
            figures.append((f"ratio read ({label}): curator.blobs / one object", IMAGES / seconds / one_read, "x"))
        figures.append(("objects for 5.5M images, packs of 500 (+ index parts)", 2 * GMAI / PACK, "objects"))
        figures += shard_stage_on_s3(workdir, url)
    return figures
