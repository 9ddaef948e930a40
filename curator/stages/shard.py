"""Shard: image-centric WebDataset tar shards, one sample per image, bytes copied not re-encoded.

Each sample holds the encoded image (``.png``/``.jpg``), a ``.json`` with its
provenance, every annotation and every caption of its triplet, a ``.txt`` with
one seeded caption, and a ``.cls`` (decimal class index, see ``classes.json``)
when the sample carries exactly one label.

Per mixture (the main set in ``shards/``, named ones in ``shards/mixtures/<name>/``)
and split: per-source weights up- or down-sample deterministically (repeats get
keys ``<sample_id>-r<N>``), one seeded global shuffle mixes every source into
every shard, and the shard count is the smallest (rounded up to a multiple of
``multiple_of``) for which balanced sample counts keep each shard within
``max_bytes`` and ``max_samples``. Tar members are USTAR with a fixed mtime,
owner, mode and order, so the same index gives byte-identical shards.

A shard appears under its final name only when complete (see ``curator.storage``)
and then gets a marker with its size and sha256. A re-run keeps a shard only if
its bytes still hash to its marker, and rewrites the rest. The manifest table,
``manifest.json``, ``classes.json``, the wids shard indexes and ``left_out.json``
(kept samples the main set drops on purpose: a source weight below 1) are written
last, after the previous run's are removed, so an index never names a missing
shard. A re-run skips the stage only when every one of these outputs is present
and every shard still matches its marker (size, and sha256 unless ``verify=False``);
otherwise it redoes the stage, keeping the shards that verify.

Blobs are hashed as they are copied: a blob that is missing or does not hash to
its ``image_sha256`` stops the run with the source to re-ingest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import tarfile
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from curator.adapters.base import short_hash
from curator.config import Mixture, ShardSettings
from curator.errors import CorpusError, CuratorError
from curator.stages.caption import sample_triplets
from curator.stages.ingest import blob_path
from curator.storage import Corpus

log = logging.getLogger(__name__)

# 2024-01-01T00:00:00Z: a fixed, plausible mtime so tar bytes never depend on when they were written.
TAR_MTIME = 1704067200
TAR_BLOCK = 512
SPLIT_ORDER = ("train", "val", "test")


SHARDS_DIR = "shards"
# Shards written at once: enough to keep an object store's uploads busy, few enough for 2 cores.
DEFAULT_THREADS = 4
CLASSES_KIND = "curator-classes-v1"
LEFT_OUT = f"{SHARDS_DIR}/left_out.json"
LEFT_OUT_KIND = "curator-left-out-v1"
REPEAT_KEY = re.compile(r"^(?P<sample_id>.+)-r(?P<repeat>[0-9]+)$")


@dataclass
class ShardInfo:
    url: str
    split: str
    nsamples: int
    bytes: int
    sha256: str
    md5: str
    mixture: str | None = None
    kept: bool = False  # verified from an earlier run rather than written now


@dataclass
class ShardResult:
    shards: list[ShardInfo] = field(default_factory=list)
    samples: int = 0
    skipped: bool = False
    classes: list[str] = field(default_factory=list)

    @property
    def written(self) -> int:
        return sum(not s.kept for s in self.shards)


@dataclass
class PlannedShard:
    mixture: str | None
    split: str
    rel: str
    keys: list[tuple[str, str]]  # (WebDataset key, sample_id), in tar order


class _HashingWriter:
    """Buffers small writes (tar headers, json, padding) into large ones, hashing each once."""

    def __init__(self, fh, buffer: int = 4 * 1024**2):
        self.fh = fh
        self.sha = hashlib.sha256()
        self.md5 = hashlib.md5()
        self.size = 0
        self._buf = bytearray()
        self._limit = buffer

    def write(self, data: bytes) -> int:
        self._buf += data
        self.size += len(data)
        if len(self._buf) >= self._limit:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buf:
            view = bytes(self._buf)
            self.fh.write(view)
            self.sha.update(view)
            self.md5.update(view)
            self._buf = bytearray()


def repeat_key(sample_id: str, repeat: int) -> str:
    """The WebDataset key of a sample's ``repeat``-th copy: the id itself, then ``<id>-r1``, ``<id>-r2``..."""
    return sample_id if repeat == 0 else f"{sample_id}-r{repeat}"


def sample_id_of(key: str) -> str:
    """Back from a key to its sample_id (the manifest's ``key`` column is the authoritative map)."""
    m = REPEAT_KEY.match(key)
    return m["sample_id"] if m else key


def mixture_root(mixture: str | None) -> str:
    return SHARDS_DIR if mixture is None else f"{SHARDS_DIR}/mixtures/{mixture}"


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
        SELECT DISTINCT mb.sample_id, a.source_id, a.kind, a.text, a.value, a.native, a.language, a.payload
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
            # payload carries what a label or text needs beyond its words: mask boxes,
            # a report's section name, a VQA pair's answer
            "labels": [
                {
                    "label": a["text"],
                    "value": a["value"],
                    "native": a["native"],
                    "source_id": a["source_id"],
                    **_payload(a),
                }
                for a in anns
                if a["kind"] == "label"
            ],
            "texts": [
                {
                    "kind": a["kind"],
                    "text": a["text"],
                    "language": a["language"],
                    "source_id": a["source_id"],
                    **_payload(a),
                }
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
            "blob_sha256": img["image_sha256"],
            "blob_source": img["source_id"],
            "members": [(ext, None), ("json", js), ("txt", txt.encode())],
            # kept as built, so the class index and mixtures need not parse the .json back
            "_record": record,
            "source_ids": record["sources"],
            "size": _member_size(img["image_bytes"]) + _member_size(len(js)) + _member_size(len(txt.encode())),
            "digest": short_hash(img["image_sha256"], hashlib.sha256(js).hexdigest(), txt, n=32),
        }
    return samples


def _payload(annotation: dict) -> dict:
    payload = json.loads(annotation["payload"] or "{}")
    return {"payload": payload} if payload else {}


def _choose_text(record: dict, settings: ShardSettings) -> str:
    """The .txt: a source caption, else a whole report, else a seeded generated caption.

    Report sections and VQA questions stay in the .json: a section is part of a
    report already offered, and a question does not describe the image.
    """
    texts = [t["text"] for t in record["texts"] if t["kind"] == "caption"]
    texts = texts or [
        t["text"] for t in record["texts"] if t["kind"] == "report" and "section" not in t.get("payload", {})
    ]
    if not texts:
        caps = record["captions"]
        preferred = [c["caption"] for c in caps if c["language"] == settings.txt_language]
        texts = preferred or [c["caption"] for c in caps]
    if not texts:
        return ""
    rng = np.random.default_rng(int(short_hash(settings.seed, record["sample_id"], n=15), 16))
    return texts[int(rng.integers(len(texts)))]


def _record(sample: dict) -> dict:
    """The sample's ``.json`` member, parsed once and kept on the sample."""
    if "_record" not in sample:
        data = next((d for ext, d in sample["members"] if ext == "json"), None)
        sample["_record"] = json.loads(data) if data else {}
    return sample["_record"]


def sample_sources(sample: dict) -> list[str]:
    """Every source a sample's ``.json`` names: its own ``source_id`` and any provenance entries."""
    if "source_ids" in sample:
        return sample["source_ids"]
    rec = _record(sample)
    found = {rec["source_id"]} if rec.get("source_id") else set()
    for key in ("provenance", "sources"):
        for entry in rec.get(key) or []:
            if isinstance(entry, dict) and entry.get("source_id"):
                found.add(entry["source_id"])
    return sorted(found)


def single_label(sample: dict, source: str | None = None) -> str | None:
    """The label of a sample with exactly one distinct label, positive; else None.

    With ``source``, only the labels that source gave count (labels without a
    ``source_id`` count for every source).
    """
    labels = _record(sample).get("labels") or []
    if source is not None:
        labels = [lab for lab in labels if lab.get("source_id", source) == source]
    names = {lab.get("label") for lab in labels}
    if len(names) == 1 and all(lab.get("value", "positive") == "positive" for lab in labels):
        return names.pop()
    return None


def _label_sources(sample: dict) -> list[str]:
    """The sources that gave a sample labels (every source of the sample when labels name none)."""
    labels = _record(sample).get("labels") or []
    named = {lab["source_id"] for lab in labels if lab.get("source_id")}
    return sorted(named) if named and all(lab.get("source_id") for lab in labels) else sample_sources(sample)


def class_labels(samples: dict[str, dict]) -> dict[str, str]:
    """sample_id -> class label, for samples where a class index applies.

    A class index applies to single-label *sources*: every sample the source
    labels carries exactly one positive label *from that source* (folder-per-class
    layouts such as RadImageNet or Kaggle sets). Multi-label findings (CheXpert)
    and masks whose slices name one or several structures (MSD) do not qualify,
    not even for the samples that happen to carry one label: their labels stay in
    ``.json``. Each source is judged on its own annotations, so a cross-source
    duplicate merged into one sample cannot disqualify a whole source. A merged
    sample gets a ``.cls`` when the labels of its qualifying sources name one
    class (the other sources' labels stay in ``.json``); qualifying sources that
    disagree give it none.
    """
    per_source: dict[str, dict[str, str | None]] = {}
    qualifies: dict[str, bool] = {}
    for sid, s in samples.items():
        if not _record(s).get("labels"):
            continue
        for source in _label_sources(s):
            label = single_label(s, source)
            per_source.setdefault(sid, {})[source] = label
            qualifies[source] = qualifies.get(source, True) and label is not None
    out = {}
    for sid, by_source in per_source.items():
        names = {label for source, label in by_source.items() if qualifies[source]}
        if len(names) == 1:
            out[sid] = names.pop()
    return out


def class_vocabulary(labels: dict[str, str]) -> list[str]:
    """Sorted class labels over all splits (so train, val and test agree): class index = position."""
    return sorted(set(labels.values()))


def _add_class_members(samples: dict[str, dict], labels: dict[str, str], classes: list[str]) -> None:
    index = {label: i for i, label in enumerate(classes)}
    for sid, s in samples.items():
        s["source_ids"] = sample_sources(s)
        if sid in labels and not any(ext == "cls" for ext, _ in s["members"]):
            data = str(index[labels[sid]]).encode()
            s["members"].append(("cls", data))
            s["size"] += _member_size(len(data))
            s["digest"] = short_hash(s["digest"], data.decode(), n=32)


def _ordered_splits(splits) -> list[str]:
    return sorted(splits, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 9, s))


def _rng(*parts) -> np.random.Generator:
    return np.random.default_rng(int(short_hash(*parts, n=15), 16))


def expand(
    ids: list[str], samples: dict[str, dict], mixture: Mixture, settings: ShardSettings, name: str | None, split: str
) -> list[tuple[str, str]]:
    """(key, sample_id) after weighting, in sorted order (shuffled later).

    A sample counts under the source that gives it the largest weight (a merged
    image that a weighted source annotates is wanted by that source). Per source,
    weight ``w`` means ``floor(w)`` copies of every sample plus one more for a
    seeded ``round(frac(w) * n)`` of them, so counts are exact and repeatable.
    """
    if split not in settings.weighted_splits or (not mixture.weights and mixture.default_weight == 1):
        return [(sid, sid) for sid in ids]

    def weight(source: str) -> float:
        return mixture.weights.get(source, mixture.default_weight)

    groups: dict[str, list[str]] = defaultdict(list)
    for sid in ids:
        sources = samples[sid]["source_ids"] or [""]
        groups[max(sources, key=lambda src: (weight(src), src))].append(sid)
    out = []
    for source in sorted(groups):
        members = groups[source]
        w = weight(source)
        whole = math.floor(w)
        extra = round((w - whole) * len(members))
        lucky = set(_rng(settings.seed, name or "", split, source, "weight").permutation(len(members))[:extra].tolist())
        for i, sid in enumerate(members):
            for r in range(whole + (i in lucky)):
                out.append((repeat_key(sid, r), sid))
    return sorted(out)


def shard_counts(sizes: list[int], settings: ShardSettings, split: str = "") -> list[int]:
    """Samples per shard: balanced (differing by at most one) and as few shards as the limits allow.

    The count starts at what ``max_bytes`` and ``max_samples`` require, is rounded
    up to a multiple of ``multiple_of``, and grows until no shard exceeds
    ``max_bytes`` unless it holds a single sample.
    """
    n_items = len(sizes)
    if n_items == 0:
        return []
    step = settings.multiple_of
    if n_items < step:
        log.warning(
            "split '%s' has %d samples, fewer than multiple_of=%d: its shard count cannot be a multiple",
            split,
            n_items,
            step,
        )
        step = 1
    prefix = np.concatenate([[0], np.cumsum(np.asarray(sizes, dtype=np.int64))])
    limit = int(settings.max_bytes)
    n = max(1, math.ceil(_tar_size(int(prefix[-1])) / limit), math.ceil(n_items / settings.max_samples))
    n = min(math.ceil(n / step) * step, n_items // step * step)
    while True:
        counts = [n_items // n + (i < n_items % n) for i in range(n)]
        bounds = np.concatenate([[0], np.cumsum(counts)])
        chunk_bytes = _tar_size(prefix[bounds[1:]] - prefix[bounds[:-1]])
        if all(b <= limit or c == 1 for b, c in zip(chunk_bytes.tolist(), counts, strict=True)):
            return _warn_if_over(counts, settings, split)
        bigger = max(n + step, math.ceil(n * int(chunk_bytes.max()) / limit / step) * step)
        if bigger > n_items:
            bigger = n_items // step * step
            if bigger == n:
                log.warning(
                    "split '%s': multiple_of=%d leaves shards over max_bytes=%d (largest %d bytes)",
                    split,
                    settings.multiple_of,
                    limit,
                    int(chunk_bytes.max()),
                )
                return _warn_if_over(counts, settings, split)
        n = bigger


def _tar_size(members):
    """A tar's bytes from its members' (block-padded) bytes: two end blocks, then padding to tarfile's record."""
    record = tarfile.RECORDSIZE
    return -(-(members + 2 * TAR_BLOCK) // record) * record


def _warn_if_over(counts: list[int], settings: ShardSettings, split: str) -> list[int]:
    if counts and max(counts) > settings.max_samples:
        log.warning(
            "split '%s': multiple_of=%d overrides max_samples=%d: shards hold up to %d samples",
            split,
            settings.multiple_of,
            settings.max_samples,
            max(counts),
        )
    return counts


def plan_shards(samples: dict[str, dict], settings: ShardSettings, name: str) -> list[PlannedShard]:
    """Every shard of every mixture and split, with its keys in tar order."""
    if any("source_ids" not in s for s in samples.values()):
        for s in samples.values():
            s.setdefault("source_ids", sample_sources(s))
    by_split: dict[str, list[str]] = defaultdict(list)
    for sid in sorted(samples):
        by_split[samples[sid]["split"]].append(sid)
    plan = []
    for mixture_name, mixture in settings.all_mixtures().items():
        root = mixture_root(mixture_name)
        stem = name if mixture_name is None else f"{name}-{mixture_name}"
        for split in _ordered_splits(by_split):
            if mixture.splits is not None and split not in mixture.splits:
                continue
            keys = expand(by_split[split], samples, mixture, settings, mixture_name, split)
            # main set: the same seed derivation as before mixtures existed, so its shards keep their bytes
            rng = _rng(settings.seed, split) if mixture_name is None else _rng(settings.seed, mixture_name, split)
            keys = [keys[i] for i in rng.permutation(len(keys))]
            counts = shard_counts([samples[sid]["size"] for _, sid in keys], settings, split)
            start = 0
            for i, count in enumerate(counts):
                rel = f"{root}/{split}/{stem}-{split}-{i:06d}.tar"
                plan.append(PlannedShard(mixture_name, split, rel, keys[start : start + count]))
                start += count
    return plan


def _tar_header_slow(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = TAR_MTIME
    info.mode = 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


# The fields after the name that never change: mode 0444, uid/gid 0, then size, mtime, checksum, type.
_HEAD = b"0000444\x000000000\x000000000\x00"
_MTIME = b"%011o\x00" % TAR_MTIME
_TAIL = b"0" + bytes(100) + b"ustar\x0000" + bytes(64 + 16 + 155 + 12)  # names, devs, prefix: NUL


def _tar_header(name: str, size: int) -> bytes:
    """A USTAR header byte-identical to ``tarfile``'s for our fixed fields, built without its machinery.

    ``tarfile`` spends more time building headers than hashing the data.
    ``_tar_header_slow`` is the reference a test compares against.
    """
    raw = name.encode("utf-8")
    if len(raw) > 100:  # keys hold no '/', so USTAR's prefix field cannot help
        raise CuratorError(f"tar member name '{name}' is over USTAR's 100 bytes: use a shorter source id")
    if size >= 8**11:
        raise CuratorError(f"tar member '{name}' is {size} bytes, over USTAR's 8 GiB limit")
    head = raw + bytes(100 - len(raw)) + _HEAD + b"%011o\x00" % size + _MTIME
    checksum = sum(head) + sum(_TAIL) + 8 * 32
    return head + b"%06o\x00 " % checksum + _TAIL


def _write_shard(
    corpus: Corpus, rel: str, keys: list[tuple[str, str]], samples: dict[str, dict]
) -> tuple[int, str, str]:
    """Stream one USTAR tar: header, data, zero padding per member, then two zero blocks.

    Written by hand rather than through ``tarfile``'s stream mode: the same bytes
    (a test compares them), at several times the speed.
    """
    with corpus.open_atomic(rel) as fh:
        out = _HashingWriter(fh)
        for key, sid in keys:
            s = samples[sid]
            for ext, data in s["members"]:
                if data is None:
                    data = _read_blob(corpus, s)
                out.write(_tar_header(f"{key}.{ext}", len(data)))
                out.write(data)
                if len(data) % TAR_BLOCK:
                    out.write(bytes(TAR_BLOCK - len(data) % TAR_BLOCK))
        out.write(bytes(2 * TAR_BLOCK))
        # tarfile pads archives to its 20-block record size; so do we, so either reader sees the same bytes
        record = tarfile.RECORDSIZE
        if out.size % record:
            out.write(bytes(record - out.size % record))
        out.flush()
    return out.size, out.sha.hexdigest(), out.md5.hexdigest()


def _read_blob(corpus: Corpus, sample: dict) -> bytes:
    """A sample's image bytes from blobs/, checked against the index's image_sha256 before they are copied."""
    blob, sha = sample["blob"], sample.get("blob_sha256")
    source = sample.get("blob_source") or "?"
    remedy = f"re-ingest source '{source}': delete _markers/ingest/{source}.json and re-run `curator build`"
    try:
        data = corpus.read_bytes(blob)
    except FileNotFoundError:
        raise CorpusError(f"blob {blob} (source '{source}') is missing: {remedy}") from None
    if sha is not None and hashlib.sha256(data).hexdigest() != sha:
        raise CorpusError(f"blob {blob} (source '{source}') does not hash to its image_sha256: {remedy}")
    return data


def _unit(rel: str) -> str:
    return rel.replace("/", "__")


def _verified(corpus: Corpus, shard: PlannedShard, unit_fp: str, rehash: bool = True) -> dict | None:
    """The marker of a shard an earlier run finished, if the stored bytes still match it."""
    done = corpus.marker("shard", _unit(shard.rel))
    if not done or done["fingerprint"] != unit_fp or not corpus.exists(shard.rel):
        return None
    if corpus.size(shard.rel) != done["bytes"] or (rehash and corpus.sha256(shard.rel) != done["sha256"]):
        log.warning("%s does not match its marker: rewriting it", shard.rel)
        return None
    return done


def run_shard(
    corpus: Corpus,
    settings: ShardSettings,
    name: str,
    progress: bool = True,
    verify: bool = True,
    threads: int = DEFAULT_THREADS,
) -> ShardResult:
    """Write every planned shard, then the manifest table and indexes; skip it all if nothing changed.

    ``verify`` re-hashes each shard an earlier run left before keeping it; without
    it a shard is kept when its marker matches and its size is right. ``threads``
    shards are written at once (uploads wait on the network, hashing releases the
    GIL); the output does not depend on it.
    """
    samples = build_samples(corpus, settings)
    labels = class_labels(samples)
    classes = class_vocabulary(labels)
    _add_class_members(samples, labels, classes)
    plan = plan_shards(samples, settings, name)
    fingerprint = short_hash(
        settings.model_dump_json(),
        name,
        *classes,
        *[f"{p.rel}:{','.join(k + '=' + samples[s]['digest'] for k, s in p.keys)}" for p in plan],
        n=32,
    )
    in_main = {sid for p in plan if p.mixture is None for _, sid in p.keys}
    left_out = [
        {"sample_id": sid, "split": samples[sid]["split"], "reason": "weight"}
        for sid in sorted(samples)
        if sid not in in_main
    ]

    def unit_fp(shard: PlannedShard) -> str:
        return short_hash(shard.rel, *[f"{k}={samples[s]['digest']}" for k, s in shard.keys], n=32)

    checked: dict[str, dict | None] = {}  # each earlier shard is hashed once, whether skipping or redoing

    def earlier(shard: PlannedShard) -> dict | None:
        if shard.rel not in checked:
            checked[shard.rel] = _verified(corpus, shard, unit_fp(shard), rehash=verify)
        return checked[shard.rel]

    marker = corpus.marker("shard", "all")
    if (
        marker
        and marker["fingerprint"] == fingerprint
        and not _missing_outputs(corpus, settings, plan)
        and all(earlier(p) for p in plan)
    ):
        shards = [ShardInfo(**{**s, "kept": True}) for s in marker["shards"]]
        return ShardResult(shards, len(samples), skipped=True, classes=classes)
    corpus.clear_marker("shard", "all")
    roots = {mixture_root(m) for m in settings.all_mixtures()}
    _remove_indexes(corpus)  # an index must never describe shards that are being rewritten

    def produce(shard: PlannedShard) -> ShardInfo:
        done = earlier(shard)
        if done:
            size, sha, md5 = done["bytes"], done["sha256"], done["md5"]
        else:
            size, sha, md5 = _write_shard(corpus, shard.rel, shard.keys, samples)
            payload = {"fingerprint": unit_fp(shard), "bytes": size, "sha256": sha, "md5": md5}
            corpus.set_marker("shard", _unit(shard.rel), payload)
        return ShardInfo(shard.rel, shard.split, len(shard.keys), size, sha, md5, shard.mixture, bool(done))

    result = ShardResult(samples=len(samples), classes=classes)
    manifests: dict[str | None, list[dict]] = defaultdict(list)
    bar = tqdm(total=len(plan), desc="shard", unit="shard", disable=None if progress else True, leave=False)
    threads = max(1, threads)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        # A window of `threads` shards in flight, consumed in plan order: a failure stops the run with
        # at most threads-1 others finishing, as a kill would.
        window: deque = deque()
        todo = iter(plan)
        try:
            for shard in todo:
                window.append((shard, pool.submit(produce, shard)))
                if len(window) < threads:
                    continue
                _collect(window.popleft(), result, manifests, samples)
                bar.update()
            while window:
                _collect(window.popleft(), result, manifests, samples)
                bar.update()
        except BaseException:
            for _, future in window:
                future.cancel()
            raise
        finally:
            bar.close()
    _remove_stale(corpus, {p.rel for p in plan}, set(settings.mixtures))
    for mixture in settings.all_mixtures():
        part = "manifest" if mixture is None else f"mixture-{mixture}"
        corpus.write_table("shards", part, manifests.get(mixture, []))
    for root in sorted(roots):
        _write_indexes(corpus, [s for s in result.shards if mixture_root(s.mixture) == root], root, name, classes)
    corpus.write_json(
        LEFT_OUT,
        {
            "kind": LEFT_OUT_KIND,
            "rule": "kept samples of the index that the main set leaves out on purpose: 'weight' means "
            "their source's weight (below 1, or 0) drew no copy of them",
            "samples": left_out,
        },
    )
    corpus.set_marker("shard", "all", {"fingerprint": fingerprint, "shards": [_info_dict(s) for s in result.shards]})
    return result


def _collect(item, result: ShardResult, manifests: dict, samples: dict[str, dict]) -> None:
    shard, future = item
    info = future.result()
    result.shards.append(info)
    for key, sid in shard.keys:
        s = samples[sid]
        manifests[shard.mixture].append(
            {
                "sample_id": sid,
                "key": key,
                "mixture": shard.mixture,
                "split": shard.split,
                "shard_url": shard.rel,
                "members": [f"{key}.{ext}" for ext, _ in s["members"]],
                "bytes": s["size"],
                "shard_sha256": info.sha256,
            }
        )


def _missing_outputs(corpus: Corpus, settings: ShardSettings, plan: list[PlannedShard]) -> list[str]:
    """Every output of a finished run that is not there: indexes, manifest table parts, shards."""
    need = [LEFT_OUT]
    for mixture in settings.all_mixtures():
        root = mixture_root(mixture)
        need += [f"{root}/manifest.json", f"{root}/classes.json"]
        need += [f"{root}/{split}.wids.json" for split in sorted({p.split for p in plan if p.mixture == mixture})]
        part = "manifest" if mixture is None else f"mixture-{mixture}"
        need.append(f"{corpus.table_dir('shards')}/part-{part}.parquet")
    need += [p.rel for p in plan]
    missing = [rel for rel in need if not corpus.exists(rel)]
    if missing:
        log.warning("shard outputs missing (%s): redoing the shard stage", ", ".join(missing[:5]))
    return missing


def _info_dict(s: ShardInfo) -> dict:
    d = dict(s.__dict__)
    d.pop("kept")
    return d


def _remove_indexes(corpus: Corpus) -> None:
    for path in corpus.find(SHARDS_DIR):
        base = path.rsplit("/", 1)[-1]
        if base.endswith(".wids.json") or base in ("manifest.json", "classes.json", "left_out.json"):
            corpus.fs.rm(path)


def _remove_stale(corpus: Corpus, planned: set[str], mixtures: set[str]) -> None:
    """Remove what an earlier plan (other settings, a killed run) left and this build does not own."""
    for path in corpus.find(SHARDS_DIR):
        rel = corpus.rel(path)
        base = rel.rsplit("/", 1)[-1]
        if (rel.endswith(".tar") and rel not in planned) or base.startswith(".tmp-"):
            corpus.fs.rm(path)
            corpus.clear_marker("shard", _unit(rel))
    for path in corpus.table_parts("shards"):
        part = path.rsplit("/", 1)[-1].removeprefix("part-").removesuffix(".parquet")
        if part.startswith("mixture-") and part.removeprefix("mixture-") not in mixtures:
            corpus.fs.rm(path)


def _write_indexes(corpus: Corpus, shards: list[ShardInfo], root: str, name: str, classes: list[str]) -> None:
    """manifest.json, classes.json and one wids index per split, with URLs relative to ``root``."""
    prefix = root + "/"
    corpus.write_json(
        f"{root}/classes.json",
        {
            "kind": CLASSES_KIND,
            "rule": "<key>.cls is the position in 'classes' of the sample's one label; only samples of "
            "single-label sources (every sample the source labels has exactly one positive label from it) have "
            "a .cls; a merged sample takes it from its single-label sources when they agree",
            "classes": classes,
        },
    )
    corpus.write_json(
        f"{root}/manifest.json",
        {
            "name": name,
            "mixture": shards[0].mixture if shards else None,
            "shards": [
                {
                    "url": s.url.removeprefix(prefix),
                    "split": s.split,
                    "nsamples": s.nsamples,
                    "bytes": s.bytes,
                    "sha256": s.sha256,
                }
                for s in shards
            ],
        },
    )
    for split in _ordered_splits({s.split for s in shards}):
        label = name if not shards[0].mixture else f"{name}-{shards[0].mixture}"
        corpus.write_json(
            f"{root}/{split}.wids.json",
            {
                "__kind__": "wids-shard-index-v1",
                "wids_version": 1,
                "name": f"{label}-{split}",
                "shardlist": [
                    {"url": s.url.removeprefix(prefix), "nsamples": s.nsamples, "filesize": s.bytes, "md5sum": s.md5}
                    for s in shards
                    if s.split == split
                ],
            },
        )
