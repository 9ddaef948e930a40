"""Shards: writing throughput against GNU tar, loader throughput against loose files.

A folder-per-class source of noise PNGs (incompressible, all distinct, so no
blob is shared) is ingested once; then

* the sharder writes it (all members: image, .json, .txt, .cls) and GNU tar
  archives the very same member files exported as loose files (``--format=ustar``,
  page cache warm for both), both in MB of tar written per second; beside them the
  stage's CPU time (one process here: below ``POOL_MIN_BYTES`` it runs serially),
  its tar units alone (reading and hash-checking every image, writing and hashing
  the tar: what is left once records, plan and routing are done), and GNU tar
  followed by ``sha256sum`` and ``md5sum`` of its output, the work the sharder's
  tar units do beyond archiving (each shard's sha256 and md5 for the manifest and
  wids index; the sharder also re-hashes each image it copies);
* a torch DataLoader (2 workers, the machine has 2 cores) reads every sample
  (image bytes + parsed json + text) from the shards through
  ``curator.loader.webdataset_loader``, and from the loose files through a
  map-style Dataset, in samples per second.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from curator.config import DuplicateSettings, HoldoutSettings, IngestSettings, ShardSettings
from curator.registry import find_card
from curator.stages.index import run_index
from curator.stages.ingest import ingest_source
from curator.stages.shard import run as shard_run
from curator.stages.shard import run_shard
from curator.stages.shard.work import write_shard
from curator.storage import Corpus

REPO = Path(__file__).resolve().parent.parent
IMAGES = 1500
WORKERS = 2
CLASSES = [("CT", "lung", "normal"), ("CT", "lung", "nodule"), ("MR", "knee", "meniscal_tear")]


def _make_source(root: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        modality, anatomy, label = CLASSES[i % len(CLASSES)]
        path = root / "radiology_ai" / modality / anatomy / label / f"img{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (256, 256), dtype=np.uint8)).save(path)


def _export_loose(shards: Path, loose: Path) -> list[Path]:
    """Every member of the written shards as a loose file, named as in the tar: <key>.<ext>."""
    paths = []
    for tar_path in sorted(shards.rglob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar:
                path = loose / member.name
                path.write_bytes(tar.extractfile(member).read())
                paths.append(path)
    return paths


class LooseFiles:
    """Map-style dataset over loose files: the baseline a training team would otherwise use."""

    def __init__(self, folder: Path):
        self.stems = sorted({p.name.split(".", 1)[0] for p in folder.iterdir()})
        self.folder = folder

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, i: int) -> dict:
        stem = self.folder / self.stems[i]
        image = stem.with_suffix(".png")
        if not image.exists():
            image = stem.with_suffix(".jpg")
        return {
            "key": self.stems[i],
            "image": image.read_bytes(),
            "meta": json.loads(stem.with_suffix(".json").read_bytes()),
            "text": stem.with_suffix(".txt").read_text(),
        }


def _keep_list(batch):
    return batch


def run(workdir: Path) -> list[tuple[str, float, str]]:
    from torch.utils.data import DataLoader

    from curator.loader import iterate_records, shard_urls, webdataset_loader

    source = workdir / "source"
    _make_source(source)
    card, card_path = find_card("demo_radimagenet", REPO / "source_registry")
    corpus = Corpus(str(workdir / "corpus"))
    ingest_source(corpus, card, card_path, source, IngestSettings(), progress=False)
    run_index(corpus, DuplicateSettings(), HoldoutSettings())

    # one split, several shards: ~32 MiB each at this scale
    settings = ShardSettings(max_bytes=32 * 1024**2)
    run_shard(corpus, settings, "warm", progress=False)  # page cache warm for the blobs
    loose = workdir / "loose"
    loose.mkdir()
    files = _export_loose(workdir / "corpus" / "shards", loose)
    shutil.rmtree(workdir / "corpus" / "shards")
    shutil.rmtree(workdir / "corpus" / "_markers" / "shard")
    units = []

    def timed(unit):
        t = time.perf_counter()
        try:
            return write_shard(unit)
        finally:
            units.append(time.perf_counter() - t)

    shard_run.write_shard = timed  # run_shard hands this module global to the (serial) executor
    try:
        t, cpu = time.perf_counter(), time.process_time()
        result = run_shard(corpus, settings, "bench", progress=False)
        shard_s, shard_cpu = time.perf_counter() - t, time.process_time() - cpu
    finally:
        shard_run.write_shard = write_shard
    shard_mb = sum(s.bytes for s in result.shards) / 1e6

    tar_out = workdir / "gnu.tar"
    names = [p.name for p in files]
    (workdir / "names.txt").write_text("\n".join(names) + "\n")
    t = time.perf_counter()
    subprocess.run(
        ["tar", "--format=ustar", "-cf", str(tar_out), "-C", str(loose), "-T", str(workdir / "names.txt")], check=True
    )
    tar_s = time.perf_counter() - t
    tar_mb = tar_out.stat().st_size / 1e6
    t = time.perf_counter()
    for tool in ("sha256sum", "md5sum"):
        subprocess.run([tool, str(tar_out)], check=True, capture_output=True)
    hashed_s = tar_s + time.perf_counter() - t

    splits = sorted({s.split for s in result.shards})
    urls = [u for split in splits for u in shard_urls(str(workdir / "corpus" / "shards"), split)]
    n_shards = sum(1 for _ in iterate_records(webdataset_loader(urls, batch_size=64, num_workers=WORKERS)))  # warm
    t = time.perf_counter()
    n_shards = sum(1 for _ in iterate_records(webdataset_loader(urls, batch_size=64, num_workers=WORKERS)))
    wds_s = time.perf_counter() - t

    loader = DataLoader(LooseFiles(loose), batch_size=64, num_workers=WORKERS, collate_fn=_keep_list)
    sum(len(b) for b in loader)  # warm
    t = time.perf_counter()
    n_loose = sum(len(b) for b in loader)
    loose_s = time.perf_counter() - t

    return [
        (f"shard writing ({len(result.shards)} shards, {shard_mb:.0f} MB)", shard_mb / shard_s, "MB/s"),
        ("shard writing, per second of CPU", shard_mb / shard_cpu, "MB/s"),
        ("shard writing, tar units alone", shard_mb / sum(units), "MB/s"),
        (f"GNU tar, same member files ({len(files)} files)", tar_mb / tar_s, "MB/s"),
        ("GNU tar, then sha256sum and md5sum of the tar", tar_mb / hashed_s, "MB/s"),
        (f"loader from shards, webdataset ({n_shards} samples, all splits)", n_shards / wds_s, "samples/s"),
        (f"loader from loose files ({n_loose} samples, all splits)", n_loose / loose_s, "samples/s"),
    ]
