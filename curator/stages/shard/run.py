"""The shard stage end to end: records -> plan -> one unit per shard on an executor -> indexes.

1. Records: every kept sample's members, streamed from DuckDB and staged in
   ``_work/shard/records.parquet`` (sample_id order).
2. Plan: every row's image located in its pack once (``_work/shard/locations.parquet``),
   then compact arrays of rows per shard in a pack-aware order (``plan.py``); each
   shard is a :class:`curator.units.Unit` whose fingerprint covers its name and
   every byte its samples put in it.
3. Shards still to write get their rows routed by DuckDB (a join and an external
   sort, spilling to disk) into ``_work/shard/by-shard.parquet``, one small row
   group range per shard; each unit reads only its own rows, one plan window
   (``READ_BATCH`` positions) at a time, copies the window's blobs (a few merged
   ranged reads, hash-checked) and writes its tar. Units run on any executor
   (serial, local process pool, Ray) with the same bytes.
4. Indexes, written after the previous run's are removed (``indexes.py``).

A re-run keeps a shard only when its marker matches and its bytes still hash to
it (size only with ``verify=False``); the stage is skipped when every output is
present and every shard is kept.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curator.blobs import LOCATIONS_SQL
from curator.config import InstructSettings, ShardSettings
from curator.errors import CuratorError
from curator.executors import Executor, default_workers, make_executor
from curator.instruct.mixtures import family_counts, family_weights
from curator.layout import mixture_root, stats_path
from curator.stages.shard import indexes
from curator.stages.shard.indexes import SampleExtras, ShardInfo, unit_id
from curator.stages.shard.plan import PlannedShard, Samples, plan_shards
from curator.stages.shard.records import (
    CONVERSATIONS,
    FamilyVariant,
    RecordExtra,
    class_vocabulary,
    record_batches,
    records_schema,
)
from curator.stages.shard.work import TarJob, write_shard
from curator.storage import Corpus
from curator.tables import connect, parquet_url, write_batches
from curator.units import Unit, run_units

log = logging.getLogger(__name__)
STAGING = "_work/shard"
RECORDS_REL = f"{STAGING}/records.parquet"
LOCATIONS_REL = f"{STAGING}/locations.parquet"
BY_SHARD_REL = f"{STAGING}/by-shard.parquet"
# Each staging row's image in its pack (curator.blobs.LOCATIONS_SQL, joined once): null pack for a loose blob.
LOCATIONS = pa.schema([("row", pa.int64()), ("pack", pa.string()), ("offset", pa.int64()), ("length", pa.int64())])
# Rows per row group of the routed file: a unit reads only the groups holding its shard.
ROUTED_ROW_GROUP = 1024
ROUTED = pa.schema(
    [
        ("shard", pa.int32()),
        ("pos", pa.int64()),
        ("rep", pa.int32()),
        ("sample_id", pa.string()),
        ("ext", pa.string()),
        ("blob_sha256", pa.string()),
        ("blob_source", pa.string()),
        # the blob's place in its pack (curator.blobs); null for a loose blob of an older corpus
        ("blob_pack", pa.string()),
        ("blob_offset", pa.int64()),
        ("blob_length", pa.int64()),
        ("json", pa.binary()),
        ("txt", pa.binary()),
        ("cls", pa.binary()),
        ("sources", pa.list_(pa.string())),
    ]
)
POOL_MIN_BYTES = 256 * 1024**2
# Rows routed (joined with their records and sorted) per query: see _route. A group's rows
# are pinned while sorted: on a 1M-sample corpus under a 300MB DuckDB limit (the 5.5M run's
# 1GB scaled down), 262,144 rows a group ran out of memory and 65,536 passed.
ROUTE_ROWS = 65_536
TABLES = ["samples", "members", "images", "sources", "annotations", "captions", "blob_packs"]


@dataclass
class ShardResult:
    shards: list[ShardInfo] = field(default_factory=list)
    samples: int = 0
    skipped: bool = False
    classes: list[str] = field(default_factory=list)

    @property
    def written(self) -> int:
        return sum(not s.kept for s in self.shards)


def run_shard(
    corpus: Corpus,
    settings: ShardSettings,
    name: str,
    progress: bool = True,
    verify: bool = True,
    executor: Executor | None = None,
    extras: Sequence[RecordExtra] = (CONVERSATIONS,),
    instruct: InstructSettings | None = None,
) -> ShardResult:
    """Write every planned shard, then the manifest table and indexes; skip it all if nothing changed.

    ``executor`` runs one unit per shard (default: a local process pool over all
    cores, or this process when at most one shard is to be written); the output
    does not depend on it. ``verify`` re-hashes each shard an earlier run left
    before keeping it; without it a shard is kept when its marker matches and its
    size is right. ``extras`` join optional per-sample tables into each ``.json``.
    ``instruct`` (the recipe's ``[instruct]``) brings the task-family shares of named
    mixtures: each such mixture's samples carry only the conversations its weights select.
    """
    # imported here: the index step brings the image readers, which a tar worker never needs
    from curator.stages.index import require_current_index

    require_current_index(corpus)
    con = connect(corpus, TABLES + [e.table for e in extras if corpus.table_parts(e.table)])
    classes = class_vocabulary(con)
    variants = family_variants(con, settings, instruct, extras)
    write_batches(
        corpus,
        RECORDS_REL,
        records_schema(len(variants)),
        record_batches(con, settings, classes, extras, variants=variants),
    )
    columns = ["sample_id", "split", "size", "digest", "sources"]
    columns += [f"{c}_{k}" for k in range(len(variants)) for c in ("size", "digest")]
    staged = pq.read_table(corpus.path(RECORDS_REL), filesystem=corpus.fs, columns=columns)
    samples = Samples.from_table(staged, [v.mixture for v in variants])
    del staged
    samples.pack, samples.pack_rank = _locate(con, corpus, len(samples))
    plan = plan_shards(samples, settings, name)
    units = [
        Unit("shard", unit_id(p.rel), p.fingerprint(samples), TarJob(corpus.url, BY_SHARD_REL, p.number, p.rel))
        for p in plan
    ]
    digest = hashlib.sha256("\0".join([settings.model_dump_json(), name, *classes]).encode())
    for v in variants:
        digest.update(f"\0{v.mixture}:{sorted(v.weights.items())}".encode())
    for u in units:
        digest.update(f"\0{u.id}={u.fingerprint}".encode())
    fingerprint = digest.hexdigest()[:32]

    checked: dict[str, bool] = {}  # each earlier shard is hashed once, whether skipping or redoing

    def kept(unit: Unit) -> bool:
        if unit.id not in checked:
            checked[unit.id] = _verified(corpus, unit, rehash=verify)
        return checked[unit.id]

    mixtures = settings.all_mixtures()
    marker = corpus.marker("shard", "all")
    if (
        marker
        and marker["fingerprint"] == fingerprint
        and not indexes.missing_outputs(corpus, mixtures, plan)
        and all(kept(u) for u in units)
    ):
        con.close()
        _clear_staging(corpus)
        shards = [ShardInfo(**{**s, "kept": True}) for s in marker["shards"]]
        return ShardResult(shards, len(samples), skipped=True, classes=classes)
    corpus.clear_marker("shard", "all")
    indexes.remove_indexes(corpus)  # an index must never describe shards that are being rewritten

    todo = [p for p, u in zip(plan, units, strict=True) if not kept(u)]
    if todo:
        _route(con, corpus, todo, [v.mixture for v in variants])
    con.close()  # DuckDB's buffers go back before the workers start, not after
    own = executor is None
    if own:
        executor = _default_executor(todo, samples)
    try:
        run = run_units(corpus, units, write_shard, executor, outputs_exist=kept, desc="shard", progress=progress)
    finally:
        if own:
            executor.close()
    if corpus.protocol not in ("file", "local"):
        corpus.fs.invalidate_cache()  # other processes wrote the shards: listings cached here are stale
    if run.failed:
        first = next(iter(sorted(run.failed.items())))
        raise CuratorError(
            f"{len(run.failed)} of {len(units)} shards failed ({first[0]}: {first[1]}): re-run to write them"
        )
    infos = {}
    for p, u in zip(plan, units, strict=True):
        st = run.stats[u.id]
        infos[p.rel] = ShardInfo(
            p.rel, p.split, len(p.rows), st["bytes"], st["sha256"], st["md5"], p.mixture, u.id in run.skipped
        )
    result = ShardResult(list(infos.values()), len(samples), classes=classes)

    indexes.remove_stale(corpus, {p.rel for p in plan}, set(settings.mixtures))
    cls_col = pq.read_table(corpus.path(RECORDS_REL), filesystem=corpus.fs, columns=["ext", "cls"])
    extra = SampleExtras(samples, cls_col["ext"].combine_chunks(), pc.is_valid(cls_col["cls"]).to_numpy(False))
    del cls_col
    for mixture in mixtures:
        indexes.write_manifest_table(corpus, mixture, plan, infos, extra)
    for root in sorted({mixture_root(m) for m in mixtures}):
        shards = [s for s in result.shards if mixture_root(s.mixture) == root]
        indexes.write_indexes(corpus, shards, root, name, classes)
    indexes.write_left_out(corpus, samples, plan)
    corpus.set_marker("shard", "all", {"fingerprint": fingerprint, "shards": [_info_dict(s) for s in result.shards]})
    _clear_staging(corpus)
    return result


def _default_executor(todo: list[PlannedShard], samples: Samples) -> Executor:
    """A process pool over all cores, or this process when the work is smaller than a pool's start.

    Starting spawn workers (a fresh interpreter importing curator each) costs about a
    second; below ``POOL_MIN_BYTES`` of tar to write, one process finishes sooner.
    """
    workers = min(default_workers(), len(todo))
    work = sum(int(samples.size[p.rows].sum()) for p in todo)
    if workers > 1 and work >= POOL_MIN_BYTES:
        return make_executor("local", workers)
    return make_executor("serial")


def family_variants(
    con, settings: ShardSettings, instruct: InstructSettings | None, extras: Sequence[RecordExtra]
) -> list[FamilyVariant]:
    """The task-family weights of each named mixture the recipe gives shares, computed once per mixture.

    Counted over the splits the shard weights apply to, each sample counting its
    source's weight in that mixture, so the written entries hit the shares.
    """
    if not instruct or not instruct.mixtures or CONVERSATIONS not in extras:
        return []
    present = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    if CONVERSATIONS.table not in present:
        return []
    splits = tuple(settings.weighted_splits)
    out = []
    for name in sorted(instruct.mixtures):
        mixture = settings.mixtures[name]
        counts = family_counts(con, splits, mixture.weights, mixture.default_weight)
        weights = family_weights(counts, instruct.mixtures[name].shares)
        log.info("shard mixture '%s': task-family weights %s", name, {f: round(w, 3) for f, w in weights.items()})
        out.append(FamilyVariant(name, weights, splits, settings.seed))
    return out


def _locate(con, corpus: Corpus, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Stage each row's pack range (``LOCATIONS_REL``), and return the plan's locality arrays.

    ``(pack, rank)``, int32 per staging row: a code per pack (-1: loose blob) and the
    row's position in (pack, offset) order. The blob_packs table is deduplicated once
    here; routing joins the staged file by row.
    """
    records = parquet_url(corpus, RECORDS_REL)
    sql = f"""
        SELECT r."row", b.pack, b."offset", b.length
        FROM read_parquet({records}) r LEFT JOIN ({LOCATIONS_SQL}) b ON b.image_sha256 = r.blob_sha256
        ORDER BY r."row"
    """
    write_batches(corpus, LOCATIONS_REL, LOCATIONS, con.sql(sql).to_arrow_reader(65_536))
    pack = np.full(n, -1, dtype=np.int32)
    rank = np.empty(n, dtype=np.int32)
    sql = f"""
        SELECT "row", CASE WHEN pack IS NULL THEN -1 ELSE dense_rank() OVER (ORDER BY pack) - 1 END::INTEGER AS code
        FROM read_parquet({parquet_url(corpus, LOCATIONS_REL)})
        ORDER BY pack NULLS LAST, "offset", "row"
    """
    done = 0
    for batch in con.sql(sql).to_arrow_reader(65_536):
        rows = batch["row"].to_numpy()
        pack[rows] = batch["code"].to_numpy()
        rank[rows] = np.arange(done, done + len(rows), dtype=np.int32)
        done += len(rows)
    if done != n:
        raise CuratorError(f"shard staging: {done} image locations for {n} records")
    return pack, rank


def _route(con, corpus: Corpus, todo: list[PlannedShard], variants: Sequence[str] = ()) -> None:
    """Each row of the shards to write, with its records, sorted by (shard, position in the tar).

    A shard of a mixture with task-family weights takes that mixture's ``.json`` (``json_<k>``).
    """
    lengths = np.array([len(p.rows) for p in todo], dtype=np.int64)
    which = {m: k for k, m in enumerate(variants)}
    plan = pa.table(
        {
            "v": np.repeat(np.array([which.get(p.mixture, -1) for p in todo], dtype=np.int32), lengths),
            "shard": np.repeat(np.array([p.number for p in todo], dtype=np.int32), lengths),
            "pos": np.concatenate([np.arange(n) for n in lengths]) if len(todo) else np.array([], np.int64),
            "rep": np.concatenate([p.repeats for p in todo]).astype(np.int32),
            "row": np.concatenate([p.rows for p in todo]).astype(np.int64),
        }
    )
    con.register("shard_plan", plan)
    cases = "".join(f" WHEN {k} THEN coalesce(r.json_{k}, r.json)" for k in range(len(variants)))
    json = f"CASE p.v{cases} ELSE r.json END" if variants else "r.json"
    sql = f"""
        SELECT p.shard, p.pos, p.rep, r.sample_id, r.ext, r.blob_sha256, r.blob_source,
               b.pack AS blob_pack, b."offset" AS blob_offset, b.length AS blob_length, {json} AS json, r.txt,
               r.cls, r.sources
        FROM (SELECT * FROM shard_plan WHERE shard BETWEEN {{first}} AND {{last}}) p
        JOIN read_parquet({parquet_url(corpus, RECORDS_REL)}) r ON r."row" = p."row"
        JOIN read_parquet({parquet_url(corpus, LOCATIONS_REL)}) b ON b."row" = p."row"
        ORDER BY p.shard, p.pos
    """

    def routed():
        # one join and sort per group of consecutive shards: a sort of every row with its .json
        # at once ran out of DuckDB's 1GB at 5.5M samples (nothing to spill to: rows are pinned
        # while sorted); each group rescans the records file instead (~85 scans at 5.5M)
        for first, last in _route_groups(todo, lengths):
            yield from con.sql(sql.format(first=first, last=last)).to_arrow_reader(ROUTED_ROW_GROUP)

    write_batches(corpus, BY_SHARD_REL, ROUTED, routed(), ROUTED_ROW_GROUP)
    con.unregister("shard_plan")


def _route_groups(todo: list[PlannedShard], lengths: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) shard numbers of consecutive groups of ``todo`` holding about ``ROUTE_ROWS`` rows each."""
    rows = ROUTE_ROWS
    groups, start, count = [], 0, 0
    for i, n in enumerate(lengths.tolist()):
        if count and count + n > rows:
            groups.append((todo[start].number, todo[i - 1].number))
            start, count = i, 0
        count += n
    if todo:
        groups.append((todo[start].number, todo[-1].number))
    return groups


def _verified(corpus: Corpus, unit: Unit, rehash: bool) -> bool:
    """Whether a shard an earlier run finished is there and its stored bytes still match its marker."""
    done = corpus.marker(unit.stage, unit.id)
    rel = unit.payload.rel
    if not done or done.get("fingerprint") != unit.fingerprint or not corpus.exists(rel):
        return False
    if not corpus.exists(stats_path(rel)):
        return False
    stats = done.get("stats", {})
    if corpus.size(rel) != stats.get("bytes") or (rehash and corpus.sha256(rel) != stats.get("sha256")):
        log.warning("%s does not match its marker: rewriting it", rel)
        return False
    return True


def _clear_staging(corpus: Corpus) -> None:
    for rel in (RECORDS_REL, LOCATIONS_REL, BY_SHARD_REL):
        corpus.remove(rel)


def _info_dict(s: ShardInfo) -> dict:
    d = dict(s.__dict__)
    d.pop("kept")
    return d
