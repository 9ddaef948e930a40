"""What a shard unit does on a worker: read its routed rows, copy its blobs, write its tar and ``_stats.json``.

Apart from the stage (``run.py``) so a worker process imports only this: pyarrow's
Parquet reader, the blob reader and the tar writer, not DuckDB, the records SQL, the
planner or the indexes (a spawned worker's resident memory: 104 -> ~75 MiB before its
first unit; a 100k-sample build runs two of them beside the stage's own process).
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from curator.blobs import BlobRef, read_blobs
from curator.layout import STATS_KIND, repeat_key, stats_path
from curator.stages.shard.tar import write_tar
from curator.storage import Corpus
from curator.units import Unit

# Positions of a shard the plan shuffles together (plan.py), read as one request batch: a
# window's images come from a few blocks of neighbours in their packs, so they are grouped
# by pack and fetched together (about one request per block), a few MB in memory.
READ_WINDOW = 256
READ_BATCH = READ_WINDOW  # what the reader cuts by (a test sets 1: one blob per read)


@dataclass(frozen=True)
class TarJob:
    """A unit's payload: where its rows are and where its tar goes (picklable, a few strings)."""

    corpus: str
    routed: str
    number: int
    rel: str


def write_shard(unit: Unit) -> dict:
    """Work of one unit, anywhere: read its routed rows, copy its blobs, write its tar, then its ``_stats.json``.

    The rows arrive a row group at a time (the routed file is sorted by shard and
    position), so a worker holds one group's records and one blob, not its shard.
    """
    job: TarJob = unit.payload
    corpus = Corpus(job.corpus)
    counts, sources = Counter(), Counter()
    with corpus.fs.open(corpus.path(job.routed), "rb") as fh:
        routed = pq.ParquetFile(fh)
        groups = _groups_of(routed.metadata, job.number)
        size, sha, md5 = write_tar(corpus, job.rel, _members(corpus, routed, groups, job.number, counts, sources))
    samples = counts["json"]
    corpus.write_json(
        stats_path(job.rel),
        {
            "kind": STATS_KIND,
            "shard": job.rel.rsplit("/", 1)[-1],
            "samples": samples,
            "members": dict(sorted(counts.items())),
            "bytes": size,
            "sha256": sha,
            "sources": dict(sorted(sources.items())),
        },
    )
    return {"bytes": size, "sha256": sha, "md5": md5, "nsamples": samples}


def _groups_of(meta: pq.FileMetaData, number: int) -> list[int]:
    """Row groups of the routed file that may hold rows of shard ``number`` (by the shard column's statistics).

    The column is found by its path in a row group, not through ``meta.schema``: on
    pyarrow 26 reading ``.schema`` ties the metadata and its schema in a reference cycle,
    so the parsed footer (~14 MB for a 1M-sample routed file) outlives its file until the
    cyclic garbage collector runs, and a tar worker grew to ~410 MiB over 50 shards.
    """
    out = []
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        if g == 0:
            col = next(i for i in range(group.num_columns) if group.column(i).path_in_schema == "shard")
        st = group.column(col).statistics
        if st is None or not st.has_min_max or st.min <= number <= st.max:
            out.append(g)
    return out


def _members(corpus: Corpus, routed: pq.ParquetFile, groups: list[int], number: int, counts: Counter, sources):
    """A shard's (name, data) members in tar order; ``counts`` tallies them by extension, ``sources`` by source."""
    for table in _windows(routed, groups, number, sources):
        yield from _batch_members(table, _fetch(corpus, table), counts)


def _windows(routed: pq.ParquetFile, groups: list[int], number: int, sources: Counter):
    """Shard ``number``'s routed rows, one plan window (``pos // READ_BATCH``) at a time, even across row groups."""
    names = ["shard", "pos", "sample_id", "rep", "ext", "blob_sha256", "blob_source", "blob_pack", "blob_offset",
             "blob_length", "json", "txt", "cls", "sources"]  # fmt: skip
    carry = None  # the rows of the last, maybe unfinished, window of the groups read so far
    for g in groups:
        t = routed.read_row_group(g, columns=names)
        # rows are sorted by (shard, pos): in tar order already. Python lists, not numpy or
        # compute kernels: pyarrow's first Arrow <-> Python or numpy conversion imports pandas
        # (~35 MiB a worker) to ask whether a value is a DataFrame; to_pylist does not.
        shard = t["shard"].to_pylist()
        lo = bisect.bisect_left(shard, number)
        t = t.slice(lo, bisect.bisect_right(shard, number) - lo)
        for srcs in t["sources"].to_pylist():
            sources.update(srcs)
        if carry is not None:
            t = pa.concat_tables([carry, t])
        if not t.num_rows:
            continue
        window = [pos // READ_BATCH for pos in t["pos"].to_pylist()]
        cuts = [0, *(i for i in range(1, len(window)) if window[i] != window[i - 1])]
        for start, stop in zip(cuts[:-1], cuts[1:], strict=True):
            yield t.slice(start, stop - start)
        carry = t.slice(cuts[-1])
        del t
    if carry is not None and carry.num_rows:
        yield carry


def _fetch(corpus: Corpus, table: pa.Table) -> list[bytes]:
    """One window's images, hash-checked, grouped by pack into merged ranged reads (curator.blobs)."""
    names = ("blob_sha256", "ext", "blob_pack", "blob_offset", "blob_length", "blob_source")
    cols = [table[c].to_pylist() for c in names]
    return read_blobs(
        corpus,
        [BlobRef(sha, ext, pack, off or 0, n or 0, src) for sha, ext, pack, off, n, src in zip(*cols, strict=True)],
    )


def _batch_members(table: pa.Table, images: list[bytes], counts: Counter):
    """One window's members in tar order: each sample's image, ``.json``, ``.txt`` and ``.cls``."""
    cols = [table[c].to_pylist() for c in ("sample_id", "rep", "ext", "json", "txt", "cls")]
    for (sid, rep, ext, js, txt, c), image in zip(zip(*cols, strict=True), images, strict=True):
        key = repeat_key(sid, rep)
        counts.update([ext, "json", "txt", *(["cls"] if c is not None else [])])
        yield f"{key}.{ext}", image
        yield f"{key}.json", js
        yield f"{key}.txt", txt
        if c is not None:
            yield f"{key}.cls", c
