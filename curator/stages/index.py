"""Index: from per-source image rows to samples (image-centric merging, duplicates, splits, hold-out).

Ingest writes one ``images`` row per normalised image per source. This step, run
once over every source, decides what the corpus *is*:

* **Exact duplicates merge.** Rows with the same ``image_sha256`` (identical
  normalised pixels) become one sample: within a source (a DICOM file and its RLE
  and JPEG 2000 copies) and across sources (one picture two datasets annotate).
  The sample keeps every member's annotations and provenance; its id is its
  smallest member id, so an image seen once keeps the id ingest gave it and every
  member id still resolves (``members`` table).
* **Splits reconcile.** Members keep the split their source gave them (official,
  else by patient, else study, else image). When members disagree the sample takes
  the *strictest* (test, then val, then train): an image any source evaluates on
  must not be trained on. The move propagates to every image of the same patient
  (or study) group, through further merged images, so no patient straddles
  splits after merging either (connected components over samples and groups).
* **Hold-out benchmarks leave.** Images whose file or pixel sha256 is on a
  benchmark list, or that match a benchmark folder's image (by hash, or by dHash
  within a threshold), are excluded and listed in ``leakage``.
* **Near-duplicates** (64-bit dHash within ``near_threshold`` bits, found with a
  banded join so no all-pairs scan) form clusters; the keeper is the member in the
  strictest split, then the smallest id; the others are flagged or dropped.

Everything heavy runs in DuckDB over the Parquet parts; Python only sees the
benchmark list, the near-duplicate pairs, and (when members disagree on a split)
two integer columns for the union-find.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curator import __version__, readers
from curator.adapters.base import sha256_file, short_hash
from curator.config import DuplicateSettings, HoldoutSettings
from curator.errors import CorpusError, CuratorError, ReadError
from curator.imaging import normalise
from curator.registry import ImagePolicy
from curator.schema import TABLES as SCHEMAS
from curator.storage import ROW_GROUP_ROWS, Corpus
from curator.tables import connect

log = logging.getLogger(__name__)

TABLES = ("samples", "members", "duplicates", "leakage")
PART = "index"
VERSION = "1"  # bump when the merging rules change, so a re-run redoes the step
SPLIT_RANK = {"test": 0, "val": 1, "train": 2}  # strictest first
_SPLIT_BY_RANK = {v: k for k, v in SPLIT_RANK.items()}


@dataclass
class IndexResult:
    images: int = 0
    samples: int = 0
    kept: int = 0
    exact_same_source: int = 0  # image rows collapsed into a sample of their own source
    exact_cross_source: int = 0  # image rows merged into a sample from another source
    merged_samples: int = 0  # samples holding more than one source
    near_pairs: int = 0
    near_dropped: int = 0
    near_cross_split: int = 0  # near-duplicate pairs (kept or dropped) whose samples sit in different splits
    held_out: int = 0
    leak_flagged: int = 0
    split_conflicts: int = 0  # samples whose members disagreed on the split
    split_moved: int = 0  # samples moved to a stricter split (conflicts and their patient groups)
    skipped: bool = False


@dataclass(frozen=True)
class BenchmarkImage:
    benchmark: str
    item: str
    sha256: str
    phash: str | None = None


def load_benchmarks(settings: HoldoutSettings) -> list[BenchmarkImage]:
    """Every hold-out entry: sha256 lines from hash lists, hashed (and dHashed) images from folders."""
    out: list[BenchmarkImage] = []
    for name in settings.hash_lists:
        path = Path(name)
        if not path.is_file():
            raise CuratorError(f"hold-out hash list not found: {path}")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            digest, _, rest = line.partition(" ")
            digest = digest.lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise CuratorError(f"{path}:{n}: not a sha256 hex digest: '{digest[:80]}'")
            out.append(BenchmarkImage(path.stem, rest.strip().lstrip("*") or f"line {n}", digest))
    for name in settings.folders:
        folder = Path(name)
        if not folder.is_dir():
            raise CuratorError(f"hold-out folder not found: {folder}")
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            out.append(
                BenchmarkImage(folder.name, path.relative_to(folder).as_posix(), sha256_file(path), _dhash_of(path))
            )
    return out


def _dhash_of(path: Path) -> str | None:
    """The perceptual hash of a hold-out's first frame; videos and slides are read lazily, so only it is decoded."""
    try:
        first = next(iter(readers.read(path)), None)
        return normalise(first, ImagePolicy()).phash if first is not None else None
    except (ReadError, ValueError, OSError) as exc:
        log.info("hold-out %s: no perceptual hash (%s); matched by sha256 only", path, exc)
        return None


def run_index(
    corpus: Corpus, duplicates: DuplicateSettings, holdout: HoldoutSettings, inputs_fingerprint: str = ""
) -> IndexResult:
    """Write ``samples``, ``members``, ``duplicates`` and ``leakage`` from ``images``; skip if unchanged."""
    bench = load_benchmarks(holdout)
    inputs = inputs_fingerprint or _ingest_fingerprint(corpus)
    fingerprint = short_hash(
        VERSION,
        __version__,
        inputs,
        duplicates.model_dump_json(),
        holdout.near_threshold,
        holdout.near_action,
        *sorted(f"{b.benchmark}/{b.item}:{b.sha256}:{b.phash}" for b in bench),
        n=32,
    )
    marker = corpus.marker("index", "all")
    if marker and marker["fingerprint"] == fingerprint and all(corpus.table_parts(t) for t in TABLES):
        return IndexResult(**{**marker["result"], "skipped": True})
    corpus.clear_marker("index", "all")

    con = connect(corpus, ["images"])
    con.execute(
        """
        CREATE TEMP TABLE m AS
        SELECT min(sample_id) OVER (PARTITION BY image_sha256) AS sample_id,
               sample_id AS member_id, source_id, image_sha256, phash, original_sha256, split, series_key,
               CASE WHEN coalesce(patient_key, study_key) IS NULL THEN NULL
                    ELSE source_id || '/' || coalesce(patient_key, 'study:' || study_key) END AS grp,
               modality, anatomy, department
        FROM images
        """
    )
    result = IndexResult()

    # -- hold-out benchmarks ----------------------------------------------------------
    leaks = _leakage(con, bench, holdout)
    held = sorted({r["sample_id"] for r in leaks if r["action"] == "excluded"})
    con.register("held", pa.table({"sample_id": pa.array(held, pa.string())}))

    # -- splits -------------------------------------------------------------------------
    fixes, result.split_conflicts = _reconcile_splits(con)
    result.split_moved = len(fixes)
    con.register(
        "split_fix",
        pa.table(
            {"sample_id": pa.array(list(fixes), pa.string()), "split": pa.array(list(fixes.values()), pa.string())}
        ),
    )
    con.execute(
        """
        CREATE TEMP TABLE s AS
        SELECT g.sample_id, g.image_sha256, g.phash, g.n_members, g.source_ids, g.modality, g.anatomy, g.department,
               coalesce(f.split, g.split) AS split,
               CASE WHEN f.split IS NULL THEN 'members' ELSE 'strictest' END AS split_rule,
               CASE WHEN h.sample_id IS NULL THEN 'keep' ELSE 'held_out' END AS status,
               CAST(NULL AS VARCHAR) AS duplicate_of
        FROM (
            SELECT sample_id, any_value(image_sha256) AS image_sha256, arg_min(phash, member_id) AS phash,
                   CAST(count(*) AS INTEGER) AS n_members,
                   list(DISTINCT source_id ORDER BY source_id) AS source_ids,
                   arg_min(modality, member_id) AS modality, arg_min(anatomy, member_id) AS anatomy,
                   arg_min(department, member_id) AS department, arg_min(split, member_id) AS split
            FROM m GROUP BY sample_id
        ) g
        LEFT JOIN split_fix f USING (sample_id)
        LEFT JOIN held h USING (sample_id)
        """
    )

    # -- near-duplicates --------------------------------------------------------------------
    near_rows = _near_duplicates(con, duplicates)
    if near_rows:
        nd = pa.Table.from_pylist(
            [{"sample_id": r["other_id"], "keeper": r["sample_id"]} for r in near_rows],
            schema=pa.schema([("sample_id", pa.string()), ("keeper", pa.string())]),
        )
        con.register("near", nd)
        status = "'near_duplicate'" if duplicates.near_action == "drop" else "s.status"
        con.execute(
            f"UPDATE s SET duplicate_of = near.keeper, status = {status} FROM near WHERE s.sample_id = near.sample_id"
        )

    # -- write ------------------------------------------------------------------------------------
    _write_arrow(
        corpus,
        "members",
        _batches(
            con,
            "SELECT sample_id, member_id, source_id, member_id = sample_id AS canonical "
            "FROM m ORDER BY sample_id, member_id",
        ),
    )
    _write_arrow(corpus, "samples", _batches(con, "SELECT * FROM s ORDER BY sample_id"))
    exact_sql = """
        SELECT CASE WHEN d.source_id = c.source_id THEN 'exact_same_source' ELSE 'exact_cross_source' END AS kind,
               d.sample_id, d.member_id AS other_id, c.source_id, d.source_id AS other_source_id,
               CAST(0 AS SMALLINT) AS distance, 'merged' AS action
        FROM m d JOIN m c ON c.member_id = d.sample_id
        WHERE d.member_id <> d.sample_id
        ORDER BY d.sample_id, d.member_id
    """
    near_table = pa.Table.from_pylist(near_rows, schema=SCHEMAS["duplicates"])
    _write_arrow(corpus, "duplicates", [*_batches(con, exact_sql), near_table])
    corpus.write_table("leakage", PART, leaks)

    counts = con.execute(
        """
        SELECT (SELECT count(*) FROM m), count(*), count(*) FILTER (WHERE status = 'keep'),
               count(*) FILTER (WHERE len(source_ids) > 1), count(*) FILTER (WHERE status = 'held_out'),
               count(*) FILTER (WHERE status = 'near_duplicate')
        FROM s
        """
    ).fetchall()[0]
    result.images, result.samples, result.kept, result.merged_samples, result.held_out, result.near_dropped = counts
    exact = dict(
        con.execute(
            "SELECT c.source_id = d.source_id, count(*) FROM m d JOIN m c ON c.member_id = d.sample_id "
            "WHERE d.member_id <> d.sample_id GROUP BY 1"
        ).fetchall()
    )
    result.exact_same_source, result.exact_cross_source = exact.get(True, 0), exact.get(False, 0)
    result.near_pairs = len(near_rows)
    if near_rows:
        result.near_cross_split = con.execute(
            "SELECT count(*) FROM near n JOIN s a ON a.sample_id = n.sample_id JOIN s b ON b.sample_id = n.keeper "
            "WHERE a.split <> b.split"
        ).fetchall()[0][0]
    result.leak_flagged = sum(1 for r in leaks if r["action"] == "flagged")
    corpus.set_marker("index", "all", {"fingerprint": fingerprint, "inputs": inputs, "result": asdict(result)})
    log.info("index: %d images -> %d samples (%d kept)", result.images, result.samples, result.kept)
    return result


def require_current_index(corpus: Corpus) -> None:
    """Raise unless the index step ran after the last ingest (a source ingested alone makes it stale)."""
    marker = corpus.marker("index", "all")
    if marker is None or not corpus.table_parts("samples"):
        raise CorpusError(f"{corpus.url} has no 'samples' table: run `curator index` (or `curator build`) first")
    if marker.get("inputs") != _ingest_fingerprint(corpus):
        raise CorpusError(f"{corpus.url}: sources were ingested after the index step: run `curator index` again")


def _ingest_fingerprint(corpus: Corpus) -> str:
    parts = []
    for path in corpus.ls("_markers/ingest"):
        if path.endswith(".json"):
            marker = corpus.read_json(f"_markers/ingest/{path.rsplit('/', 1)[-1]}")
            parts.append(f"{path.rsplit('/', 1)[-1]}:{marker['fingerprint']}")
    return short_hash(*parts, n=32)


def _batches(con, sql: str):
    yield from con.sql(sql).to_arrow_reader(ROW_GROUP_ROWS)


def _write_arrow(corpus: Corpus, table: str, batches) -> int:
    """Stream Arrow batches (columns in schema order) into the table's part, atomically, a row group each."""
    schema = SCHEMAS[table]
    n = 0
    with corpus.open_atomic(f"{corpus.table_dir(table)}/part-{PART}.parquet") as fh:
        with pq.ParquetWriter(fh, schema, compression="zstd") as writer:
            for batch in batches:
                t = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
                if t.num_rows:
                    writer.write_table(t.rename_columns(schema.names).cast(schema))
                    n += t.num_rows
            if n == 0:
                writer.write_table(schema.empty_table())
    return n


def _band_join(left: str, right: str, threshold: int, self_join: bool) -> str:
    """SQL for (a_id, b_id, distance) of rows within ``threshold`` bits of dHash.

    ``left``/``right`` are queries giving (id, h UBIGINT). With threshold+1 disjoint
    bands, two hashes within threshold bits agree exactly on at least one band
    (pigeonhole), so equi-joins per band find every candidate without a cross join.
    """
    bands = threshold + 1
    width = 64 // bands
    selects = []
    for b in range(bands):
        start = b * width
        bits = 64 - start if b == bands - 1 else width
        mask = (1 << bits) - 1
        cond = f"((a.h >> {start}) & {mask}::UBIGINT) = ((b.h >> {start}) & {mask}::UBIGINT)"
        order = " AND a.id < b.id" if self_join else ""
        selects.append(
            f"SELECT a.id AS a_id, b.id AS b_id, bit_count(xor(a.h, b.h)) AS distance "
            f"FROM ({left}) a JOIN ({right}) b ON {cond}{order} WHERE bit_count(xor(a.h, b.h)) <= {threshold}"
        )
    return "SELECT DISTINCT * FROM (" + " UNION ALL ".join(selects) + ") ORDER BY a_id, b_id"


def _hash_int(column: str) -> str:
    return f"CAST('0x' || {column} AS UBIGINT)"


def _leakage(con, bench: list[BenchmarkImage], settings: HoldoutSettings) -> list[dict]:
    if not bench:
        return []
    con.register(
        "bench",
        pa.Table.from_pylist(
            [asdict(b) for b in bench],
            schema=pa.schema(
                [("benchmark", pa.string()), ("item", pa.string()), ("sha256", pa.string()), ("phash", pa.string())]
            ),
        ),
    )
    rows = con.execute(
        """
        SELECT DISTINCT m.sample_id, b.benchmark, b.item AS benchmark_item, 'original_sha256' AS match
        FROM m JOIN bench b ON m.original_sha256 = b.sha256
        UNION
        SELECT DISTINCT m.sample_id, b.benchmark, b.item, 'image_sha256'
        FROM m JOIN bench b ON m.image_sha256 = b.sha256
        """
    ).fetchall()
    leaks = {
        (sid, bm, item): {
            "sample_id": sid,
            "benchmark": bm,
            "benchmark_item": item,
            "match": match,
            "distance": 0,
            "action": "excluded",
        }
        for sid, bm, item, match in sorted(rows)
    }
    if settings.near_threshold is not None and any(b.phash for b in bench):
        con.execute(
            "CREATE TEMP TABLE bench_ids AS SELECT row_number() OVER () AS id, * FROM bench WHERE phash IS NOT NULL"
        )
        sql = _band_join(
            f"SELECT DISTINCT sample_id AS id, {_hash_int('phash')} AS h FROM m",
            f"SELECT id, {_hash_int('phash')} AS h FROM bench_ids",
            settings.near_threshold,
            self_join=False,
        )
        near = con.execute(
            f"SELECT p.a_id, b.benchmark, b.item, p.distance FROM ({sql}) p JOIN bench_ids b ON b.id = p.b_id"
        ).fetchall()
        action = "excluded" if settings.near_action == "drop" else "flagged"
        for sid, bm, item, distance in near:
            leaks.setdefault(
                (sid, bm, item),
                {
                    "sample_id": sid,
                    "benchmark": bm,
                    "benchmark_item": item,
                    "match": "phash",
                    "distance": int(distance),
                    "action": action,
                },
            )
    return [leaks[k] for k in sorted(leaks)]


def _components(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Connected-component label (smallest node id) of each of n nodes, given edges a[i]-b[i].

    Vectorised min-label propagation with pointer jumping: a few numpy passes
    instead of a Python loop per row, so a million edges take well under a second.
    """
    label = np.arange(n, dtype=np.int64)
    while True:
        low = np.minimum(label[a], label[b])
        new = label.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        new = new[new]
        if np.array_equal(new, label):
            return label
        label = new


def _reconcile_splits(con) -> tuple[dict[str, str], int]:
    """Samples whose split must change: {sample_id: split}, and how many samples had disagreeing members.

    Nodes are samples and patient (else study) groups; each image row joins its sample
    to its group. Every sample of a component takes the strictest split in it.
    """
    conflicts = con.execute(
        "SELECT count(*) FROM (SELECT sample_id FROM m GROUP BY sample_id HAVING count(DISTINCT split) > 1)"
    ).fetchall()[0][0]
    if not conflicts:
        return {}, 0
    t = con.sql("SELECT sample_id, grp, split FROM m ORDER BY member_id").to_arrow_table()
    samples = pc.dictionary_encode(t["sample_id"]).combine_chunks()
    groups = pc.dictionary_encode(t["grp"]).combine_chunks()
    n_samples = len(samples.dictionary)
    s_idx = samples.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    g_valid = groups.indices.is_valid().to_numpy(zero_copy_only=False)
    g_idx = groups.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64) + n_samples
    label = _components(s_idx[g_valid], g_idx[g_valid], n_samples + len(groups.dictionary))
    rank = np.array([SPLIT_RANK.get(x, 2) for x in t["split"].to_pylist()], dtype=np.int64)
    strictest = np.full(len(label), 2, dtype=np.int64)
    np.minimum.at(strictest, label[s_idx], rank)
    low = np.full(n_samples, 2, dtype=np.int64)
    high = np.zeros(n_samples, dtype=np.int64)
    np.minimum.at(low, s_idx, rank)
    np.maximum.at(high, s_idx, rank)
    target = strictest[label[:n_samples]]
    # Only components holding a sample whose members disagree move: elsewhere a source's
    # own choices (an official split that puts one patient in two splits) are its to make.
    touched = np.zeros(len(label), dtype=bool)
    touched[label[:n_samples][low != high]] = True
    moved = np.flatnonzero(touched[label[:n_samples]] & ((low != target) | (high != target)))
    names = samples.dictionary.to_pylist()
    return {names[i]: _SPLIT_BY_RANK[int(target[i])] for i in sorted(moved, key=lambda i: names[i])}, int(conflicts)


def _near_duplicates(con, settings: DuplicateSettings) -> list[dict]:
    """Rows for the duplicates table: each near-duplicate against its cluster's keeper."""
    if settings.near_threshold is None:
        return []
    base = f"SELECT sample_id AS id, {_hash_int('phash')} AS h FROM s WHERE status = 'keep' AND phash IS NOT NULL"
    pairs = con.execute(_band_join(base, base, settings.near_threshold, self_join=True)).fetchall()
    if not pairs:
        return []
    ids = sorted({p[0] for p in pairs} | {p[1] for p in pairs})
    con.register("near_ids", pa.table({"sample_id": pa.array(ids, pa.string())}))
    info = {
        r[0]: r[1:]
        for r in con.execute(
            "SELECT s.sample_id, s.split, s.source_ids[1], "
            "arg_min(coalesce(m.series_key, 'file:' || m.original_sha256), m.member_id) "
            "FROM s JOIN near_ids USING (sample_id) JOIN m USING (sample_id) GROUP BY 1, 2, 3"
        ).fetchall()
    }
    neighbours: dict[str, dict[str, int]] = {sid: {} for sid in ids}
    for a, b, d in pairs:
        # Slices of one series or volume (one file's frames, or a DICOM series' files) are
        # distinct views by construction, and the split keeps them together: adjacent slices
        # look alike, so they are never near-duplicates of each other.
        if info[a][2] != info[b][2]:
            neighbours[a][b] = neighbours[b][a] = int(d)
    # Leader clustering, not connected components: dHash distance is not transitive, and
    # chains (a~b~c~...) would lump images that differ a lot. Leaders are taken in keeper
    # order (strictest split, then smallest id); each claims its unclaimed neighbours, so
    # every duplicate is within the threshold of the sample kept for it.
    action = "dropped" if settings.near_action == "drop" else "flagged"
    claimed: set[str] = set()
    rows = []
    for leader in sorted(ids, key=lambda sid: (SPLIT_RANK.get(info[sid][0], 2), sid)):
        if leader in claimed or not neighbours[leader]:
            continue
        claimed.add(leader)
        for other in sorted(neighbours[leader]):
            if other in claimed:
                continue
            claimed.add(other)
            rows.append(
                {
                    "kind": "near",
                    "sample_id": leader,
                    "other_id": other,
                    "source_id": info[leader][1],
                    "other_source_id": info[other][1],
                    "distance": neighbours[leader][other],
                    "action": action,
                }
            )
    return sorted(rows, key=lambda r: (r["sample_id"], r["other_id"]))
