"""Shard: image-centric WebDataset tar shards, one sample per image, bytes copied not re-encoded.

Each sample holds the encoded image (``.png``/``.jpg``), a ``.json`` with its
provenance, every annotation and every caption of its triplet, and a ``.txt``
with one seeded caption. Samples are shuffled per split with a seeded RNG, so
every shard mixes sources, and packed greedily up to ``max_samples`` and
``max_bytes``. Tar members are USTAR with a fixed mtime, owner and mode, so the
same index gives byte-identical shards. Each shard is written under a temporary
name and moved into place when complete; the manifest and the wids shard index
are written last.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from curator.adapters.base import short_hash
from curator.config import ShardSettings
from curator.stages.caption import sample_triplets
from curator.stages.ingest import blob_path
from curator.storage import Corpus

log = logging.getLogger(__name__)

# 2024-01-01T00:00:00Z: a fixed, plausible mtime so tar bytes never depend on when they were written.
TAR_MTIME = 1704067200
TAR_BLOCK = 512
SPLIT_ORDER = ("train", "val", "test")


@dataclass
class ShardInfo:
    url: str
    split: str
    nsamples: int
    bytes: int
    sha256: str
    md5: str


@dataclass
class ShardResult:
    shards: list[ShardInfo] = field(default_factory=list)
    samples: int = 0
    skipped: bool = False


class _HashingWriter:
    def __init__(self, fh):
        self.fh = fh
        self.sha = hashlib.sha256()
        self.md5 = hashlib.md5()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.fh.write(data)
        self.sha.update(data)
        self.md5.update(data)
        self.size += len(data)
        return len(data)


def _member_size(n: int) -> int:
    return TAR_BLOCK + (n + TAR_BLOCK - 1) // TAR_BLOCK * TAR_BLOCK


def build_samples(corpus: Corpus, settings: ShardSettings) -> dict[str, dict]:
    """Everything a shard needs per sample: json record, txt, image location. Keyed by sample_id.

    One entry per sample the index keeps (``samples.status = 'keep'``): a merged
    sample's ``.json`` lists every member's provenance (source card, original file
    and hash, adapter, transform) and the annotations of all its sources, each
    tagged with its source. Annotations identical within one source (the copies of
    one image a source holds twice) appear once.
    """
    from curator.audit.db import connect, stream

    con = connect(corpus, ["samples", "members", "images", "sources", "annotations", "captions"])
    provenance: dict[str, list[dict]] = defaultdict(list)
    for p in stream(
        con,
        """
        SELECT mb.sample_id AS merged_id, i.*, src.name AS source_name, src.version AS source_version,
               src.license, src.access, src.citation, src.homepage
        FROM members mb
        JOIN samples s ON s.sample_id = mb.sample_id AND s.status = 'keep'
        JOIN images i ON i.sample_id = mb.member_id
        JOIN sources src ON src.source_id = i.source_id
        ORDER BY mb.sample_id, mb.member_id
        """,
    ):
        provenance[p["merged_id"]].append(p)
    notes: dict[str, list[dict]] = defaultdict(list)
    for a in stream(
        con,
        """
        SELECT DISTINCT mb.sample_id, a.source_id, a.kind, a.text, a.value, a.native, a.language
        FROM members mb
        JOIN samples s ON s.sample_id = mb.sample_id AND s.status = 'keep'
        JOIN annotations a ON a.sample_id = mb.member_id
        ORDER BY ALL
        """,
    ):
        notes[a["sample_id"]].append(a)
    captions: dict[str, list[dict]] = defaultdict(list)
    for c in stream(con, "SELECT * FROM captions WHERE validation = 'ok' ORDER BY triplet_id, language, caption_index"):
        captions[c["triplet_id"]].append(c)
    triplets = sample_triplets(corpus)

    samples = {}
    for smp in stream(con, "SELECT * FROM samples WHERE status = 'keep' ORDER BY sample_id"):
        sid = smp["sample_id"]
        members = provenance[sid]
        img = members[0]  # the canonical member: its id is the sample's
        anns = notes.get(sid, [])
        trip = triplets.get(sid)
        caps = captions.get(trip.id, []) if trip else []
        record = {
            "sample_id": sid,
            "image": {k: img[k] for k in ("image_sha256", "image_format", "width", "height", "bit_depth", "channels")},
            "modality": smp["modality"],
            "anatomy": smp["anatomy"],
            "department": smp["department"],
            "split": smp["split"],
            "split_rule": smp["split_rule"],
            "sources": sorted({m["source_id"] for m in members}),
            "licenses": sorted({m["license"] for m in members}),
            "access": sorted({m["access"] for m in members}),
            "near_duplicate_of": smp["duplicate_of"],
            "provenance": [
                {
                    "member_id": m["sample_id"],
                    "source_id": m["source_id"],
                    "source_name": m["source_name"],
                    "source_version": m["source_version"],
                    "license": m["license"],
                    "access": m["access"],
                    "citation": m["citation"],
                    "homepage": m["homepage"],
                    "original_uri": m["original_uri"],
                    "original_sha256": m["original_sha256"],
                    "original_format": m["original_format"],
                    "frame_index": m["frame_index"],
                    "plane": m["plane"],
                    "split": m["split"],
                    "adapter": {"name": m["adapter"], "version": m["adapter_version"]},
                    "transform": json.loads(m["transform"]),
                }
                for m in members
            ],
            "labels": [
                {"label": a["text"], "value": a["value"], "native": a["native"], "source_id": a["source_id"]}
                for a in anns
                if a["kind"] == "label"
            ],
            "texts": [
                {"kind": a["kind"], "text": a["text"], "language": a["language"], "source_id": a["source_id"]}
                for a in anns
                if a["kind"] != "label"
            ],
            "triplet": None
            if trip is None
            else {"triplet_id": trip.id, "label": trip.label, "anatomy": trip.anatomy, "modality": trip.modality},
            "captions": [
                {
                    "caption": c["caption"],
                    "language": c["language"],
                    "generator": c["generator"],
                    "model": c["model"],
                    "prompt_id": c["prompt_id"],
                    "prompt_sha256": c["prompt_sha256"],
                }
                for c in caps
            ],
        }
        txt = _choose_text(record, settings)
        ext = "png" if img["image_format"] == "png" else "jpg"
        js = json.dumps(record, sort_keys=True, ensure_ascii=False).encode()
        samples[sid] = {
            "split": smp["split"],
            "blob": blob_path(img["image_sha256"], ext),
            "members": [(ext, None), ("json", js), ("txt", txt.encode())],
            "size": _member_size(img["image_bytes"]) + _member_size(len(js)) + _member_size(len(txt.encode())),
            "digest": short_hash(img["image_sha256"], hashlib.sha256(js).hexdigest(), txt, n=32),
        }
    return samples


def _choose_text(record: dict, settings: ShardSettings) -> str:
    texts = [t["text"] for t in record["texts"]]
    if not texts:
        caps = record["captions"]
        preferred = [c["caption"] for c in caps if c["language"] == settings.txt_language]
        texts = preferred or [c["caption"] for c in caps]
    if not texts:
        return ""
    rng = np.random.default_rng(int(short_hash(settings.seed, record["sample_id"], n=15), 16))
    return texts[int(rng.integers(len(texts)))]


def plan_shards(samples: dict[str, dict], settings: ShardSettings, name: str) -> list[tuple[str, str, list[str]]]:
    """(split, relative path, sample ids) per shard: seeded shuffle per split, greedy packing."""
    by_split: dict[str, list[str]] = defaultdict(list)
    for sid in sorted(samples):
        by_split[samples[sid]["split"]].append(sid)
    plan = []
    for split in sorted(by_split, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 9, s)):
        ids = by_split[split]
        rng = np.random.default_rng(int(short_hash(settings.seed, split, n=15), 16))
        ids = [ids[i] for i in rng.permutation(len(ids))]
        chunks, current, size = [], [], 1024  # tar end-of-archive blocks
        for sid in ids:
            s = samples[sid]["size"]
            if current and (len(current) >= settings.max_samples or size + s > settings.max_bytes):
                chunks.append(current)
                current, size = [], 1024
            current.append(sid)
            size += s
        if current:
            chunks.append(current)
        for i, chunk in enumerate(chunks):
            plan.append((split, f"shards/{split}/{name}-{split}-{i:06d}.tar", chunk))
    return plan


def _write_shard(corpus: Corpus, rel: str, ids: list[str], samples: dict[str, dict]) -> tuple[int, str, str]:
    with corpus.open_atomic(rel) as fh:
        out = _HashingWriter(fh)
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
            for sid in ids:
                s = samples[sid]
                for ext, data in s["members"]:
                    if data is None:
                        data = corpus.read_bytes(s["blob"])
                    info = tarfile.TarInfo(f"{sid}.{ext}")
                    info.size = len(data)
                    info.mtime = TAR_MTIME
                    info.mode = 0o444
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    tar.addfile(info, io.BytesIO(data))
    return out.size, out.sha.hexdigest(), out.md5.hexdigest()


def run_shard(corpus: Corpus, settings: ShardSettings, name: str, progress: bool = True) -> ShardResult:
    samples = build_samples(corpus, settings)
    plan = plan_shards(samples, settings, name)
    fingerprint = short_hash(
        settings.model_dump_json(),
        name,
        *[f"{rel}:{','.join(samples[s]['digest'] for s in ids)}" for _, rel, ids in plan],
        n=32,
    )
    marker = corpus.marker("shard", "all")
    if marker and marker["fingerprint"] == fingerprint and all(corpus.exists(s["url"]) for s in marker["shards"]):
        return ShardResult([ShardInfo(**s) for s in marker["shards"]], len(samples), skipped=True)
    corpus.clear_marker("shard", "all")

    result = ShardResult(samples=len(samples))
    manifest_rows = []
    planned = {rel for _, rel, _ in plan}
    for split, rel, ids in tqdm(plan, desc="shard", unit="shard", disable=None if progress else True, leave=False):
        unit_fp = short_hash(rel, *[samples[s]["digest"] for s in ids], n=32)
        unit = rel.replace("/", "__")
        done = corpus.marker("shard", unit)
        if done and done["fingerprint"] == unit_fp and corpus.exists(rel):
            size, sha, md5 = done["bytes"], done["sha256"], done["md5"]
        else:
            size, sha, md5 = _write_shard(corpus, rel, ids, samples)
            corpus.set_marker("shard", unit, {"fingerprint": unit_fp, "bytes": size, "sha256": sha, "md5": md5})
        result.shards.append(ShardInfo(rel, split, len(ids), size, sha, md5))
        for sid in ids:
            s = samples[sid]
            manifest_rows.append(
                {
                    "sample_id": sid,
                    "split": split,
                    "shard_url": rel,
                    "members": [f"{sid}.{ext}" for ext, _ in s["members"]],
                    "bytes": s["size"],
                    "shard_sha256": sha,
                }
            )
    for path in corpus.find("shards"):
        rel = corpus.rel(path)
        if rel.endswith(".tar") and rel not in planned:
            corpus.fs.rm(path)  # left by an earlier plan (other settings); not part of this build
    corpus.write_table("shards", "manifest", manifest_rows)
    _write_indexes(corpus, result.shards, name)
    corpus.set_marker("shard", "all", {"fingerprint": fingerprint, "shards": [s.__dict__ for s in result.shards]})
    return result


def _write_indexes(corpus: Corpus, shards: list[ShardInfo], name: str) -> None:
    corpus.write_json(
        "shards/manifest.json",
        {
            "name": name,
            "shards": [
                {
                    "url": s.url.removeprefix("shards/"),
                    "split": s.split,
                    "nsamples": s.nsamples,
                    "bytes": s.bytes,
                    "sha256": s.sha256,
                }
                for s in shards
            ],
        },
    )
    for split in sorted({s.split for s in shards}):
        corpus.write_json(
            f"shards/{split}.wids.json",
            {
                "__kind__": "wids-shard-index-v1",
                "wids_version": 1,
                "name": f"{name}-{split}",
                "shardlist": [
                    {"url": s.url.removeprefix("shards/"), "nsamples": s.nsamples, "filesize": s.bytes, "md5sum": s.md5}
                    for s in shards
                    if s.split == split
                ],
            },
        )
