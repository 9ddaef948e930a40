"""Every `curator query` example in the README runs, and DuckDB and polars SQL give the same answer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import run

from curator.schema import TABLES

README = Path(__file__).resolve().parent.parent / "README.md"
QUERIES = [
    q
    for q in re.findall(r'curator query "(.+?)"', README.read_text(encoding="utf-8"), flags=re.DOTALL)
    if q.lstrip().upper().startswith(("SELECT", "WITH"))  # not the synopsis `curator query "SQL"`
]


def test_the_readme_has_auditor_queries():
    assert len(QUERIES) >= 2


def _values(rows: list[dict]) -> list[tuple]:
    """Rows as value tuples: the engines name aggregates differently (count_star() / len)."""
    return sorted(tuple("" if v is None else v for v in r.values()) for r in rows)


@pytest.mark.parametrize("sql", QUERIES, ids=[f"query{i}" for i in range(len(QUERIES))])
def test_a_readme_query_gives_the_same_rows_in_duckdb_and_polars(demo_build, sql):
    out, _ = demo_build
    result = run("query", " ".join(sql.split()), "--out", out, "--format", "json")
    assert result.exit_code == 0, result.output
    duck = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    assert duck, "an example should answer something on the demo corpus"
    tables = {t: pl.scan_parquet(str(out / "index" / t / "*.parquet")) for t in TABLES if (out / "index" / t).is_dir()}
    frame = pl.SQLContext(tables).execute(sql).collect()
    assert _values(frame.to_dicts()) == _values(duck)


def test_the_readme_queries_use_the_typed_and_joinable_tables():
    joined = " ".join(QUERIES)
    assert "sample_captions" in joined and "transform.window.origin" in joined and "transform.resize" in joined
    assert "array_length(boxes)" in joined  # a label's regions are a typed list, not JSON


# -- images.transform is a struct -------------------------------------------------------------
# one transform of each shape the readers and the imaging policy record (curator/readers, curator/imaging.py)
TRANSFORMS = [
    {"window": {"centre": 40.0, "width": 400.0, "function": "LINEAR", "from": "header"},
     "modality_lut": {"slope": 1.0, "intercept": -1024.0}, "inverted": "MONOCHROME1",
     "padding": "Pixel Padding Value shown black", "encode": {"format": "png", "bit_depth": 16}},
    {"window": {"from": "VOI LUT Sequence"}, "modality_lut": "Modality LUT Sequence",
     "resize": {"from": [512, 400], "to": [256, 200], "filter": "lanczos"},
     "depth": "16-bit input quantised to 8-bit", "encode": {"format": "jpeg", "bit_depth": 8, "quality": 92}},
    {"window": {"low": 3.5, "high": 812.25, "from": "volume percentile 0.5-99.5"},
     "orientation": "RAS canonical, radiological display", "voxel_mm": [0.7, 0.7, 2.5],
     "aspect": {"pixel_spacing_mm": [0.7, 2.5]}},
    {"slide": {"level": 1, "downsample": 4.0, "level0_xy": [2048, 1024], "magnification": 10.0,
               "level_magnification": 10.0}},
    {"video": {"fps": 1.0, "every_s": 1.0}, "source_mode": "RGBA composited on black"},
    {"cine": {"fps": 2.0, "every_s": 0.5}, "a_new_step": {"any": ["shape", 1]}, "resize": {"by": "a new rule"}},
    {},
]  # fmt: skip


@pytest.mark.parametrize("transform", TRANSFORMS, ids=[f"shape{i}" for i in range(len(TRANSFORMS))])
def test_a_transform_survives_the_struct_and_keeps_json_only_for_steps_of_no_fixed_shape(transform):
    from curator.schema import TRANSFORM, transform_dict, transform_row

    stored = pa.array([transform_row(transform)], TRANSFORM)  # raises on a value the struct cannot hold
    assert transform_dict(stored.to_pylist()[0]) == transform
    other = stored.field("other").to_pylist()[0]
    free = {k: v for k, v in transform.items() if k in ("a_new_step",) or (k == "resize" and "by" in v)}
    assert (json.loads(other) if other else {}) == free


def test_duckdb_and_polars_read_transform_fields_with_no_dtype(demo_build):
    import duckdb

    out, _ = demo_build
    images = pl.read_parquet(str(out / "index" / "images" / "*.parquet"))
    assert isinstance(images.schema["transform"], pl.Struct)
    by_polars = sorted(
        images.select(
            "sample_id",
            pl.col("transform").struct.field("window").struct.field("origin").alias("w"),
            pl.col("transform").struct.field("encode").struct.field("bit_depth").alias("bits"),
        ).rows()
    )
    by_duckdb = sorted(
        duckdb.sql(
            f"SELECT sample_id, transform.window.origin, transform.encode.bit_depth "
            f"FROM read_parquet('{out}/index/images/*.parquet')"
        ).fetchall()
    )
    assert by_polars == by_duckdb
    assert {w for _, w, _ in by_polars} >= {"header", "card", None} and {b for *_, b in by_polars} == {8, 16}


def test_shards_and_trace_show_the_transform_the_table_holds(demo_build):
    import tarfile

    from curator.schema import transform_dict

    out, _ = demo_build
    images = {r["sample_id"]: r for r in pq.read_table(str(out / "index" / "images")).to_pylist()}
    shard = sorted((out / "shards" / "train").glob("*.tar"))[0]
    with tarfile.open(shard) as tar:
        metas = [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json")]
    checked = 0
    for meta in metas:
        for member in meta["provenance"]:
            assert member["transform"] == transform_dict(images[member["member_id"]]["transform"])
            assert member["transform"]["encode"]["format"] in ("png", "jpeg")
            checked += 1
    assert checked >= len(metas) > 0
    sid = metas[0]["sample_id"]
    traced = json.loads(run("trace", sid, "--out", out, "--json").output)
    for p in traced["provenance"]:
        assert p["image"]["transform"] == transform_dict(images[p["member_id"]]["transform"])


def test_samples_whose_captions_a_model_wrote_are_one_join(demo_build):
    """The issue's query: the SQL join gives every sample the triplet rule (Python) gives, no fewer."""
    from curator.stages.caption import sample_triplets
    from curator.storage import Corpus
    from curator.tables import connect, rows

    out, _ = demo_build
    con = connect(Corpus(str(out)))
    by_sql = {
        (r["model"], r["sample_id"])
        for r in rows(
            con,
            "SELECT DISTINCT c.model, sc.sample_id FROM sample_captions sc "
            "JOIN captions c USING (triplet_id, language, caption_index) WHERE c.validation = 'ok'",
        )
    }
    ok = "SELECT triplet_id, list(DISTINCT model) AS m FROM captions WHERE validation = 'ok' GROUP BY 1"
    models = {r["triplet_id"]: r["m"] for r in rows(con, ok)}
    by_rule = {(m, sid) for sid, t in sample_triplets(Corpus(str(out))).items() for m in models.get(t.id, [])}
    assert by_sql == by_rule and len(by_sql) >= 20
