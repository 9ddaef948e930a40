"""Shard records: every kept sample's ``.json``, ``.txt`` and ``.cls``, streamed from DuckDB in batches.

One SQL query gathers, per sample the index keeps (``samples.status = 'keep'``),
the provenance of every member (source card, original file and hash, adapter,
transform), the annotations of all its sources (each tagged with its source;
annotations identical within one source appear once), its caption triplet and
the triplet's validated captions, and its class. Python turns one batch of those
rows at a time into the members a tar needs, so memory is bounded by the batch,
never by the corpus; the query itself runs once per range of ``CHUNK_ROWS`` kept
sample_ids, so DuckDB's joins and list aggregates are bounded by the range. Records
are written, in sample_id order, to a staging Parquet file that the plan and the
tar writers read.

A named mixture with task-family shares (:class:`FamilyVariant`) gets its own
``.json`` per sample beside the main one: the conversations its family weights
select (``curator.instruct.mixtures.select_entries``, seeded per sample).

Optional tables join cleanly: a :class:`RecordExtra` names a table and a SQL
aggregate per sample; when the table has parts its list lands in the ``.json``
under the extra's field (how the instruction stage's conversations will arrive).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curator.adapters.base import short_hash
from curator.blobs import blob_ext
from curator.config import ShardSettings
from curator.instruct.mixtures import select_entries
from curator.schema import transform_dict
from curator.stages.shard.tar import member_size
from curator.tables import batches

# Rows turned into Python dicts (and .json) at a time: 2,048 peaks ~90 MiB lower than 8,192 at 100k, no slower
BATCH_ROWS = 2048
# Kept samples per records query (see _chunked): ~100 MiB of DuckDB working memory; each query
# reads only its range's row groups of the staged files (336 queries at 5.5M samples).
CHUNK_ROWS = 16_384

# The staging file: one row per kept sample, in sample_id order ("row" is its position).
RECORDS = pa.schema(
    [
        ("row", pa.int64()),
        ("sample_id", pa.string()),
        ("split", pa.string()),
        ("ext", pa.string()),
        ("blob_sha256", pa.string()),
        ("blob_source", pa.string()),
        ("json", pa.binary()),
        ("txt", pa.binary()),
        ("cls", pa.binary()),  # null: no class index applies
        ("size", pa.int64()),  # the sample's tar bytes, headers and padding included
        ("digest", pa.binary(16)),  # of everything the sample puts in a tar: unit fingerprints use it
        ("sources", pa.list_(pa.string())),
    ]
)


def records_schema(variants: int = 0) -> pa.Schema:
    """``RECORDS`` plus, per task-family variant ``k``, the sample's ``json_k``, ``size_k`` and ``digest_k``.

    A variant is a named mixture whose recipe weights task families
    (``[instruct.mixtures.<name>]``): its samples carry only the entries the weights
    select, so their ``.json`` differs from the main set's. Null where the variant
    leaves the sample as it is (a split the weights do not apply to).
    """
    fields = list(RECORDS)
    for k in range(variants):
        fields += [(f"json_{k}", pa.binary()), (f"size_{k}", pa.int64()), (f"digest_{k}", pa.binary(16))]
    return pa.schema(fields)


@dataclass(frozen=True)
class FamilyVariant:
    """One named mixture's task-family weights (``curator.instruct.mixtures.family_weights``), applied per sample."""

    mixture: str
    weights: dict[str, float]
    splits: tuple[str, ...]  # where the weights apply (the shard settings' weighted_splits)
    seed: int


@dataclass(frozen=True)
class RecordExtra:
    """An optional per-sample list from another table: ``sql`` yields (sample_id, value) rows, one per sample."""

    field: str  # the .json key
    table: str  # joined only when this table has parts
    sql: str


# Each sample's training entries from the instruct stage (all its tasks together, IMAX-style),
# in the sample's own entry order; the same rows `curator export llava` writes.
CONVERSATIONS = RecordExtra(
    "conversations",
    "instructions",
    """
    SELECT sample_id, list(struct_pack(entry_id, entry_index, source_id, task, form, family, language, turns,
                                       generator, model, prompt_id, prompt_sha256, validation, origin)
                           ORDER BY entry_index, entry_id) AS value
    FROM instructions GROUP BY sample_id
    """,
)


# A class index applies to single-label *sources*: every sample the source labels
# carries exactly one positive label *from that source* (folder-per-class layouts such
# as RadImageNet). Multi-label findings (CheXpert) and masks naming several structures
# (MSD) do not qualify, not even for their samples with one label. Each source is judged
# on its own annotations (a label without a source counts for every source of its
# sample), so a cross-source duplicate cannot disqualify a whole source. A merged sample
# takes its class from its qualifying sources when they name one label.
CLASSES_SQL = """
CREATE OR REPLACE TEMP TABLE shard_classes AS
WITH labels AS (
    SELECT DISTINCT mb.sample_id, a.source_id, a.text, a.value
    FROM members mb
    JOIN samples s ON s.sample_id = mb.sample_id AND s.status = 'keep'
    JOIN annotations a ON a.sample_id = mb.member_id AND a.kind = 'label'
), sample_sources AS (
    SELECT s.sample_id, unnest(s.source_ids) AS source_id FROM samples s
    WHERE s.status = 'keep' AND s.sample_id IN (SELECT sample_id FROM labels)
), judged AS (  -- the sources each labelled sample is judged under: those naming its labels, else all of its own
    SELECT DISTINCT l.sample_id, coalesce(l.source_id, ss.source_id) AS source_id
    FROM labels l LEFT JOIN sample_sources ss ON l.source_id IS NULL AND ss.sample_id = l.sample_id
), per_source AS (
    SELECT j.sample_id, j.source_id,
           CASE WHEN count(DISTINCT l.text) = 1 AND bool_and(l.value = 'positive') THEN any_value(l.text) END AS label
    FROM judged j JOIN labels l
      ON l.sample_id = j.sample_id AND (l.source_id = j.source_id OR l.source_id IS NULL)
    GROUP BY j.sample_id, j.source_id
), qualifying AS (
    SELECT source_id FROM per_source GROUP BY source_id HAVING bool_and(label IS NOT NULL)
)
SELECT p.sample_id, any_value(p.label) AS label
FROM per_source p JOIN qualifying q USING (source_id)
GROUP BY p.sample_id HAVING count(DISTINCT p.label) = 1
"""


def class_vocabulary(con) -> list[str]:
    """Sorted class labels over all splits (so train, val and test agree): class index = position."""
    con.execute(CLASSES_SQL)
    return [r[0] for r in con.execute("SELECT DISTINCT label FROM shard_classes ORDER BY label").fetchall()]


# What each records query reads, staged once per run (see _stage): sorted by sample id, so a
# query for a range of kept samples reads only the row groups of its range.
_STAGED_ROW_GROUP = 16_384
# Query ranges per staging slice: ~260k samples joined and sorted at once (~300 MiB of DuckDB memory).
SLICE_CHUNKS = 16
_PROV_SQL = """
    SELECT mb.sample_id AS sid, struct_pack(
               member_id := i.sample_id, source_id := i.source_id, source_name := src.name,
               source_version := src.version, license := src.license, access := src.access,
               citation := src.citation, homepage := src.homepage, original_uri := i.original_uri,
               original_sha256 := i.original_sha256, original_format := i.original_format,
               frame_index := i.frame_index, plane := i.plane, split := i.split, adapter := i.adapter,
               adapter_version := i.adapter_version, transform := i.transform,
               image_sha256 := i.image_sha256, image_format := i.image_format, image_bytes := i.image_bytes,
               width := i.width, height := i.height, bit_depth := i.bit_depth, channels := i.channels
           ) AS m
    FROM (SELECT * FROM members WHERE {within}) mb
    JOIN (SELECT * FROM samples WHERE {within}) s ON s.sample_id = mb.sample_id AND s.status = 'keep'
    JOIN images i ON i.sample_id = mb.member_id
    JOIN sources src ON src.source_id = i.source_id
    ORDER BY sid, mb.member_id
"""
_NOTES_SQL = """
    SELECT DISTINCT mb.sample_id AS sid, a.source_id, a.kind, a.text, a.value, a.native, a.language, a.payload,
           a.boxes
    FROM (SELECT * FROM members WHERE {within}) mb
    JOIN (SELECT * FROM samples WHERE {within}) s ON s.sample_id = mb.sample_id AND s.status = 'keep'
    JOIN annotations a ON a.sample_id = mb.member_id
    ORDER BY sid
"""
_CAPS_SQL = """
    CREATE OR REPLACE TEMP TABLE shard_caps AS
    SELECT triplet_id, list(struct_pack(caption, language, generator, model, prompt_id, prompt_sha256)
                            ORDER BY language, caption_index) AS captions
    FROM captions WHERE validation = 'ok' GROUP BY triplet_id
"""


def _stage(con, folder: str, extras: Sequence[RecordExtra], starts: list[str]) -> dict[str, str]:
    """Stage what the records queries join, sorted by sample id into local Parquet, a slice of samples at a time.

    Members with their images and cards, annotations, triplets, classes, and the
    extras' tables. Read back per range of samples, each file yields only the row
    groups of its range, so a records query costs its range, not the corpus: before,
    every query re-scanned every part of ``images`` and ``annotations`` (21k parts each
    at 5.5M samples, 336 queries: hours). Each slice of ``SLICE_CHUNKS`` query ranges
    is joined and sorted on its own (one scan of the corpus's images and annotations
    per slice): a sort of the whole corpus's provenance outgrew DuckDB's memory limit
    (1.8 GiB at 1M samples under a 1 GB limit; nested rows sort in memory).
    """
    os.makedirs(folder, exist_ok=True)
    sql = {
        "prov": _PROV_SQL,
        "notes": _NOTES_SQL,
        "triplets": "SELECT * FROM sample_triplets WHERE {within} ORDER BY sample_id",
        "classes": "SELECT * FROM shard_classes WHERE {within} ORDER BY sample_id",
    }
    sql.update({f"extra_{e.table}": f"SELECT * FROM {e.table} WHERE {{within}} ORDER BY sample_id" for e in extras})
    edges = starts[::SLICE_CHUNKS] or [None]
    staged: dict[str, list[str]] = {name: [] for name in sql}
    for k, lo in enumerate(edges):
        hi = edges[k + 1] if k + 1 < len(edges) else None
        for name, query in sql.items():
            path = os.path.join(folder, f"{name}-{k:05d}.parquet")
            query = query.format(within=_within("sample_id", lo, hi))
            con.execute(f"COPY ({query}) TO {_quote(path)} (FORMAT parquet, ROW_GROUP_SIZE {_STAGED_ROW_GROUP})")
            staged[name].append(path)
    con.execute(_CAPS_SQL)
    return {name: "read_parquet([" + ", ".join(_quote(p) for p in paths) + "])" for name, paths in staged.items()}


def _records_sql(staged: dict[str, str], extras: Sequence[RecordExtra], lo: str | None, hi: str | None) -> str:
    """The records of the kept samples with ``lo <= sample_id < hi`` (``None``: unbounded), from the staged files."""

    def within(col: str) -> str:
        return _within(col, lo, hi)

    extra_cols = "".join(f", x{i}.value AS {e.field}" for i, e in enumerate(extras))
    extra_joins = "".join(f" LEFT JOIN ({e.sql}) x{i} ON x{i}.sample_id = s.sample_id" for i, e in enumerate(extras))
    return f"""
    WITH keep AS (SELECT * FROM samples WHERE status = 'keep' AND {within("sample_id")}),
    prov AS (
        SELECT sid, list(m ORDER BY m.member_id) AS members
        FROM {staged["prov"]} WHERE {within("sid")} GROUP BY sid
    ),
    notes AS (
        SELECT sid, list(struct_pack(source_id, kind, text, value, native, language, payload, boxes)
                         ORDER BY source_id, kind, text, value, native, language, payload, boxes) AS notes
        FROM {staged["notes"]} WHERE {within("sid")} GROUP BY sid
    )
    SELECT s.sample_id, s.modality, s.anatomy, s.department, s.split, s.split_rule, s.duplicate_of,
           prov.members, notes.notes, st.triplet_id, st.label AS triplet_label, st.anatomy AS triplet_anatomy,
           st.modality AS triplet_modality, caps.captions, cls.label AS class_label{extra_cols}
    FROM keep s
    JOIN prov ON prov.sid = s.sample_id
    LEFT JOIN notes ON notes.sid = s.sample_id
    LEFT JOIN (SELECT * FROM {staged["triplets"]} WHERE {within("sample_id")}) st ON st.sample_id = s.sample_id
    LEFT JOIN shard_caps caps ON caps.triplet_id = st.triplet_id
    LEFT JOIN (SELECT * FROM {staged["classes"]} WHERE {within("sample_id")}) cls ON cls.sample_id = s.sample_id
    {extra_joins}
    ORDER BY s.sample_id
    """


def record_batches(
    con,
    settings: ShardSettings,
    classes: list[str],
    extras: Sequence[RecordExtra] = (),
    batch_rows: int = BATCH_ROWS,
    variants: Sequence[FamilyVariant] = (),
) -> Iterator[pa.RecordBatch]:
    """Staging rows (schema ``records_schema(len(variants))``), one batch at a time, in sample_id order.

    ``con`` holds the index views and ``shard_classes`` (see :func:`class_vocabulary`).
    """
    # imported here: the caption stage brings the LLM client, which a tar worker importing this package never needs
    from curator.stages.caption import TRIPLETS_SQL

    con.execute(TRIPLETS_SQL)
    present = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    extras = [e for e in extras if e.table in present]
    schema = records_schema(len(variants))
    index = {label: i for i, label in enumerate(classes)}
    row = 0
    for batch in _chunked(con, extras, batch_rows):
        out = {name: [] for name in schema.names}
        for r in batch.to_pylist():
            record = _record(r, extras)
            img = r["members"][0]  # the canonical member: its id is the sample's
            js = json.dumps(record, sort_keys=True, ensure_ascii=False).encode()
            txt = choose_text(record, settings).encode()
            cls = None if r["class_label"] is None else str(index[r["class_label"]]).encode()
            fixed = member_size(img["image_bytes"]) + member_size(len(txt))
            if cls is not None:
                fixed += member_size(len(cls))
            size = fixed + member_size(len(js))
            digest = _digest(img["image_sha256"], js, txt, cls)
            for k, v in enumerate(variants):
                vjs = None
                if "conversations" in record and r["split"] in v.splits:
                    chosen = select_entries(record["conversations"], v.weights, v.seed, v.mixture, r["sample_id"])
                    vjs = json.dumps({**record, "conversations": chosen}, sort_keys=True, ensure_ascii=False).encode()
                out[f"json_{k}"].append(vjs)
                out[f"size_{k}"].append(None if vjs is None else fixed + member_size(len(vjs)))
                out[f"digest_{k}"].append(None if vjs is None else _digest(img["image_sha256"], vjs, txt, cls))
            out["row"].append(row)
            out["sample_id"].append(record["sample_id"])
            out["split"].append(r["split"])
            out["ext"].append(blob_ext(img["image_format"]))
            out["blob_sha256"].append(img["image_sha256"])
            out["blob_source"].append(img["source_id"])
            out["json"].append(js)
            out["txt"].append(txt)
            out["cls"].append(cls)
            out["size"].append(size)
            out["digest"].append(digest)
            out["sources"].append(record["sources"])
            row += 1
        yield pa.RecordBatch.from_pydict(out, schema=schema)


def _digest(image_sha256: str, js: bytes, txt: bytes, cls: bytes | None) -> bytes:
    """Of everything a sample puts in a tar (16 bytes): unit fingerprints change with any of it."""
    return hashlib.sha256(image_sha256.encode() + b"\0" + js + b"\0" + txt + b"\0" + (cls or b"-")).digest()[:16]


def chunk_bounds(con, chunk_rows: int = CHUNK_ROWS) -> list[str]:
    """Every ``chunk_rows``-th kept sample_id: where each records query starts (a few strings per million)."""
    return [
        r[0]
        for r in con.execute(
            """
            SELECT sample_id FROM (
                SELECT sample_id, row_number() OVER (ORDER BY sample_id) - 1 AS n FROM samples WHERE status = 'keep'
            ) WHERE n % ? = 0 ORDER BY sample_id
            """,
            [chunk_rows],
        ).fetchall()
    ]


def _chunked(con, extras: Sequence[RecordExtra], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The records query once per sample_id range: DuckDB's joins, aggregates and sort stay chunk-sized.

    One query over the whole corpus builds hash tables of every sample's provenance
    and annotations at once (about 5 KiB a sample, and list aggregates do not spill:
    100k samples ran out of a 256 MB limit). Ranges of ``CHUNK_ROWS`` kept samples
    bound it; the concatenation is the same sample_id-ordered stream. What the queries
    join is staged first (:func:`_stage`), in a folder beside DuckDB's spill folder
    (the corpus's local scratch space), removed when the stream ends.

    An extra's SQL runs once per range, against its table's rows of that range: a
    temporary view of the table's name, over its staged rows, shadows the index's view.
    """
    folder = os.path.join(con.execute("SELECT current_setting('temp_directory')").fetchone()[0], "records")
    try:
        starts = chunk_bounds(con)
        staged = _stage(con, folder, extras, starts)
        for i, lo in enumerate(starts):
            hi = starts[i + 1] if i + 1 < len(starts) else None
            for e in extras:
                con.execute(
                    f"CREATE OR REPLACE TEMP VIEW {e.table} AS "
                    f"SELECT * FROM {staged[f'extra_{e.table}']} WHERE {_within('sample_id', lo, hi)}"
                )
            yield from batches(con, _records_sql(staged, extras, lo, hi), batch_rows)
    finally:
        for e in extras:
            con.execute(f"DROP VIEW IF EXISTS temp.{e.table}")
        shutil.rmtree(folder, ignore_errors=True)


def _within(col: str, lo: str | None, hi: str | None) -> str:
    """SQL for ``lo <= col < hi`` (``None``: unbounded on that side)."""
    bounds = [f"{col} >= {_quote(lo)}" if lo is not None else "", f"{col} < {_quote(hi)}" if hi is not None else ""]
    return " AND ".join(b for b in bounds if b) or "true"


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _record(r: dict, extras: Sequence[RecordExtra]) -> dict:
    """The sample's ``.json``: provenance and all annotations, captions and (later) conversations."""
    members = r["members"]
    img = members[0]
    notes = r["notes"] or []
    record = {
        "sample_id": r["sample_id"],
        "image": {k: img[k] for k in ("image_sha256", "image_format", "width", "height", "bit_depth", "channels")},
        "modality": r["modality"],
        "anatomy": r["anatomy"],
        "department": r["department"],
        "split": r["split"],
        "split_rule": r["split_rule"],
        "sources": sorted({m["source_id"] for m in members}),
        "licenses": sorted({m["license"] for m in members}),
        "access": sorted({m["access"] for m in members}),
        "near_duplicate_of": r["duplicate_of"],
        "provenance": [
            {
                "member_id": m["member_id"],
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
                "transform": transform_dict(m["transform"]),
            }
            for m in members
        ],
        # payload carries what a label or text needs beyond its words: a report's
        # section name, a VQA pair's answer; a label's regions are its "boxes"
        "labels": [
            {"label": a["text"], "value": a["value"], "native": a["native"], "source_id": a["source_id"], **_payload(a)}
            for a in notes
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
            for a in notes
            if a["kind"] != "label"
        ],
        "triplet": None
        if r["triplet_id"] is None
        else {
            "triplet_id": r["triplet_id"],
            "label": r["triplet_label"],
            "anatomy": r["triplet_anatomy"],
            "modality": r["triplet_modality"],
        },
        "captions": list(r["captions"] or []),
    }
    for extra in extras:
        record[extra.field] = r[extra.field] or []
    return record


def _payload(annotation: dict) -> dict:
    payload = json.loads(annotation["payload"] or "{}")
    out = {"payload": payload} if payload else {}
    if annotation.get("boxes"):  # output image pixels, [x0, y0, x1, y1), x right, y down
        out["boxes"] = [[b["x0"], b["y0"], b["x1"], b["y1"]] for b in annotation["boxes"]]
    return out


def choose_text(record: dict, settings: ShardSettings) -> str:
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
