"""Every `curator query` example in the README runs, and DuckDB and polars SQL give the same answer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
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
