"""The shard plan: which keys go into which shard, held as compact arrays.

Per mixture (the main set in ``shards/``, named ones in ``shards/mixtures/<name>/``)
and split: per-source weights up- or down-sample deterministically (repeats get
keys ``<sample_id>-r<N>``), a seeded shuffle mixes every source into every shard,
and the shard count is the smallest (rounded up to a multiple of ``multiple_of``)
for which balanced sample counts keep each shard within ``max_bytes`` and
``max_samples``.

The shuffle is pack-aware (:func:`shuffle`). Images live in per-ingest-unit packs
(``curator.blobs``); a per-sample global shuffle puts each of a shard's images in
another pack, one ranged GET per image on object storage (5.5M of them for a
GMAI-VL-sized corpus). So the order is two-level: a split's samples in pack order
are cut into *blocks* of ``ShardSettings.shuffle_block`` neighbours of one pack, a
seeded permutation of the blocks makes the stream that shards are cut from (every
shard draws its blocks from the whole corpus), then a seeded permutation inside
each window of ``READ_WINDOW`` positions of a shard (the tar writer's read batch)
interleaves the window's blocks. A tar worker then reads a window's images with
about one merged ranged request per block, not one per image.

Samples are rows of the staging records (sample_id order); the plan holds, per
shard, numpy arrays of those rows and repeat numbers, never a Python object per sample.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator.adapters.base import short_hash
from curator.config import Mixture, ShardSettings
from curator.layout import mixture_root, repeat_key
from curator.stages.shard.tar import tar_size
from curator.stages.shard.work import READ_WINDOW

log = logging.getLogger(__name__)
SPLIT_ORDER = ("train", "val", "test")
# READ_WINDOW: positions of a shard shuffled together, and what a tar worker reads per request
# batch (defined beside the reader, which a worker imports without this planner)
# A shard holds at least this many blocks: small shards shrink the block (down to 1, the
# plain per-sample shuffle) rather than come from one or two packs.
MIN_BLOCKS_PER_SHARD = 16


@dataclass
class Samples:
    """What planning needs of every sample, column-wise: one entry per staging row.

    ``pack`` and ``pack_rank`` (int32, or None: no locality known) say where each
    sample's image lives: a code per blob pack (-1: a loose blob of an older corpus)
    and the row's position in (pack, offset) order over the whole corpus.
    """

    sample_id: pa.Array
    split: np.ndarray  # int32 codes into ``splits``
    splits: list[str]
    size: np.ndarray  # int64 tar bytes
    digest: np.ndarray  # (n, 16) uint8
    sources: pa.ListArray
    # per named mixture that weights task families: its own (size, digest) columns (records.FamilyVariant)
    variants: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    pack: np.ndarray | None = None
    pack_rank: np.ndarray | None = None

    @classmethod
    def from_table(cls, table: pa.Table, variants: Sequence[str] = ()) -> Samples:
        """From the staging columns; ``variants`` names the mixtures with ``size_<k>``/``digest_<k>`` columns."""
        split = pc.dictionary_encode(table["split"].combine_chunks())
        size = table["size"].to_numpy().astype(np.int64)
        digest = _digests(table["digest"])
        own = {}
        for k, mixture in enumerate(variants):
            vsize = table[f"size_{k}"]
            valid = pc.is_valid(vsize).to_numpy(zero_copy_only=False)
            vdigest = _digests(pc.fill_null(table[f"digest_{k}"], pa.scalar(bytes(16), pa.binary(16))))
            own[mixture] = (
                np.where(valid, vsize.fill_null(0).to_numpy().astype(np.int64), size),
                np.where(valid[:, None], vdigest, digest),
            )
        return cls(
            sample_id=table["sample_id"].combine_chunks(),
            split=split.indices.to_numpy(zero_copy_only=False).astype(np.int32),
            splits=split.dictionary.to_pylist(),
            size=size,
            digest=digest,
            sources=table["sources"].combine_chunks(),
            variants=own,
        )

    def size_of(self, mixture: str | None) -> np.ndarray:
        """Tar bytes of every sample as ``mixture`` writes it."""
        return self.variants[mixture][0] if mixture in self.variants else self.size

    def digest_of(self, mixture: str | None) -> np.ndarray:
        return self.variants[mixture][1] if mixture in self.variants else self.digest

    def __len__(self) -> int:
        return len(self.size)

    def rows_of(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == self.splits.index(split)) if split in self.splits else np.array([], int)


@dataclass
class PlannedShard:
    number: int  # position in the plan: the staging file's shard column
    mixture: str | None
    split: str
    rel: str
    rows: np.ndarray  # staging rows, in tar order
    repeats: np.ndarray  # repeat number of each (0: the sample itself)

    def keys(self, samples: Samples) -> list[tuple[str, str]]:
        """(WebDataset key, sample_id) in tar order (one shard's worth of strings)."""
        ids = samples.sample_id.take(pa.array(self.rows)).to_pylist()
        return [(repeat_key(sid, int(r)), sid) for sid, r in zip(ids, self.repeats, strict=True)]

    def fingerprint(self, samples: Samples) -> str:
        """Changes with the shard's name and with any byte any of its samples puts in it."""
        h = hashlib.sha256(self.rel.encode())
        h.update(np.ascontiguousarray(samples.digest_of(self.mixture)[self.rows]).tobytes())
        h.update(self.repeats.astype(np.int32).tobytes())
        return h.hexdigest()[:32]


def _digests(column) -> np.ndarray:
    """A fixed_size_binary(16) column as an (n, 16) uint8 array, without a Python object per value."""
    digest = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    raw = np.frombuffer(digest.buffers()[1], dtype=np.uint8)
    return raw[digest.offset * 16 : (digest.offset + len(digest)) * 16].reshape(-1, 16)


def ordered_splits(splits) -> list[str]:
    return sorted(splits, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 9, s))


def _rng(*parts) -> np.random.Generator:
    return np.random.default_rng(int(short_hash(*parts, n=15), 16))


def expand(
    rows: np.ndarray, samples: Samples, mixture: Mixture, settings: ShardSettings, name: str | None, split: str
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, repeats) after weighting, in (row, repeat) order (shuffled later).

    A sample counts under the source that gives it the largest weight (a merged
    image that a weighted source annotates is wanted by that source). Per source,
    weight ``w`` means ``floor(w)`` copies of every sample plus one more for a
    seeded ``round(frac(w) * n)`` of them, so counts are exact and repeatable.
    """
    if split not in settings.weighted_splits or (not mixture.weights and mixture.default_weight == 1):
        return rows, np.zeros(len(rows), dtype=np.int32)
    sources = samples.sources.take(pa.array(rows))
    flat = sources.flatten().to_pylist()
    names = sorted(set(flat) | {""})

    def weight(source: str) -> float:
        return mixture.weights.get(source, mixture.default_weight)

    # rank sources by (weight, name): the max rank per sample is its weighting source
    ranked = sorted(names, key=lambda src: (weight(src), src))
    rank = {src: i for i, src in enumerate(ranked)}
    offsets = sources.offsets.to_numpy()
    flat_rank = np.array([rank[s] for s in flat], dtype=np.int64)
    lengths = np.diff(offsets)
    best = np.full(len(rows), rank[""], dtype=np.int64)
    has = lengths > 0
    if flat_rank.size:
        best[has] = np.maximum.reduceat(flat_rank, (offsets[:-1] - offsets[0])[has])
    copies = np.zeros(len(rows), dtype=np.int64)
    for r in np.unique(best):
        source = ranked[int(r)]
        members = np.flatnonzero(best == r)
        w = weight(source)
        whole = math.floor(w)
        extra = round((w - whole) * len(members))
        lucky = _rng(settings.seed, name or "", split, source, "weight").permutation(len(members))[:extra]
        copies[members] = whole
        copies[members[lucky]] += 1
    out_rows = np.repeat(rows, copies)
    starts = np.repeat(np.cumsum(copies) - copies, copies)
    out_reps = (np.arange(len(out_rows)) - starts).astype(np.int32)
    return out_rows, out_reps


def shard_counts(sizes, settings: ShardSettings, split: str = "") -> list[int]:
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
    n = max(1, math.ceil(tar_size(int(prefix[-1])) / limit), math.ceil(n_items / settings.max_samples))
    n = min(math.ceil(n / step) * step, n_items // step * step)
    while True:
        counts = [n_items // n + (i < n_items % n) for i in range(n)]
        bounds = np.concatenate([[0], np.cumsum(counts)])
        chunk_bytes = tar_size(prefix[bounds[1:]] - prefix[bounds[:-1]])
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


def block_size(sizes: np.ndarray, settings: ShardSettings) -> int:
    """``shuffle_block``, shrunk so that a shard of the split holds ``MIN_BLOCKS_PER_SHARD`` blocks or more.

    The shard count is estimated from the limits (its lower bound, so shards hold
    at most the estimated samples), before the order that :func:`shard_counts` balances exists.
    """
    n = len(sizes)
    if n == 0 or settings.shuffle_block <= 1:
        return 1
    total = tar_size(int(np.asarray(sizes, dtype=np.int64).sum()))
    shards = max(1, math.ceil(total / int(settings.max_bytes)), math.ceil(n / settings.max_samples))
    shards = math.ceil(shards / settings.multiple_of) * settings.multiple_of
    return max(1, min(settings.shuffle_block, n // shards // MIN_BLOCKS_PER_SHARD))


def shuffle(
    rows: np.ndarray,
    reps: np.ndarray,
    samples: Samples,
    sizes: np.ndarray,
    settings: ShardSettings,
    rng: np.random.Generator,
    split: str = "",
) -> tuple[np.ndarray, list[int]]:
    """A split's tar order (a permutation of its entries) and its samples per shard.

    With a block of 1 (``shuffle_block = 1``, small shards, or no image in a pack) it
    is one seeded per-sample permutation, as before packs existed. Otherwise:

    1. entries in pack order (copy number, then their image's place in the corpus's
       packs), cut into blocks of at most ``block`` entries of one pack and one copy
       (so the repeats of a weighted source land in other blocks, far apart); each
       loose blob of an older corpus is a block alone;
    2. a seeded permutation of the blocks: the stream, balanced into shards by
       :func:`shard_counts` as before;
    3. inside each shard, a seeded permutation of every ``READ_WINDOW`` positions,
       so neighbours in a tar come from the window's blocks in turn.

    Everything is drawn from ``rng`` (seeded by the recipe, mixture and split), so
    the plan never depends on the worker count.
    """
    n = len(rows)
    # no pack locations, or none packed (an older corpus of loose blobs): nothing to keep together
    packed = samples.pack is not None and bool((samples.pack[rows] >= 0).any())
    block = block_size(sizes, settings) if packed else 1
    if block <= 1:
        order = rng.permutation(n)
        return order, shard_counts(sizes[order], settings, split)
    # pack order: by copy, then by the image's place in the corpus's packs (ranks are distinct)
    key = samples.pack_rank[rows].astype(np.int64)
    if reps.any():
        key += reps.astype(np.int64) * len(samples)
    by_pack = np.argsort(key)
    del key
    pack, rep = samples.pack[rows][by_pack], reps[by_pack]
    run = np.ones(n, dtype=bool)  # where a run of one pack and one copy starts (each loose blob alone)
    run[1:] = (pack[1:] != pack[:-1]) | (rep[1:] != rep[:-1]) | (pack[1:] < 0)
    del pack, rep
    run_start = np.flatnonzero(run)
    in_run = np.arange(n, dtype=np.int64)
    in_run -= np.repeat(run_start, np.diff(np.append(run_start, n)))
    run |= in_run % block == 0
    del in_run, run_start
    starts = np.flatnonzero(run)  # blocks: runs cut every ``block`` entries
    del run
    lengths = np.diff(np.append(starts, n))
    order = rng.permutation(len(starts))  # the blocks in stream order
    take = np.repeat(starts[order] - (np.cumsum(lengths[order]) - lengths[order]), lengths[order])
    take += np.arange(n)
    stream = by_pack[take]
    del by_pack, take
    counts = shard_counts(sizes[stream], settings, split)
    per_shard = np.asarray(counts, dtype=np.int64)
    pos = np.arange(n, dtype=np.int64) - np.repeat(np.cumsum(per_shard) - per_shard, per_shard)
    # each window (numbered through the split) is an integer; a seeded fraction orders the entries inside it
    windows = -(-per_shard // READ_WINDOW)
    window = np.repeat(np.cumsum(windows) - windows, per_shard)
    window += pos // READ_WINDOW
    del pos
    key = rng.random(n)
    key += window
    del window
    return stream[np.argsort(key, kind="stable")], counts


def plan_shards(samples: Samples, settings: ShardSettings, name: str) -> list[PlannedShard]:
    """Every shard of every mixture and split, with its rows in tar order."""
    plan = []
    for mixture_name, mixture in settings.all_mixtures().items():
        root = mixture_root(mixture_name)
        stem = name if mixture_name is None else f"{name}-{mixture_name}"
        for split in ordered_splits(samples.splits):
            if mixture.splits is not None and split not in mixture.splits:
                continue
            rows, reps = expand(samples.rows_of(split), samples, mixture, settings, mixture_name, split)
            # main set: the same seed derivation as before mixtures existed, so its shards keep their bytes
            rng = _rng(settings.seed, split) if mixture_name is None else _rng(settings.seed, mixture_name, split)
            order, counts = shuffle(rows, reps, samples, samples.size_of(mixture_name)[rows], settings, rng, split)
            rows, reps = rows[order], reps[order]
            start = 0
            for i, count in enumerate(counts):
                rel = f"{root}/{split}/{stem}-{split}-{i:06d}.tar"
                sl = slice(start, start + count)
                plan.append(PlannedShard(len(plan), mixture_name, split, rel, rows[sl], reps[sl]))
                start += count
    return plan
