"""query: SQL over a corpus's index tables (DuckDB), printed as a table or written as CSV/JSON.

Every table is a view of the same name: sources, images, annotations, captions,
rejects, shards, samples, members, duplicates, leakage. Results stream from
DuckDB in batches, so writing a million-row CSV never holds it in memory.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import duckdb

from curator.audit.db import connect
from curator.errors import CuratorError
from curator.schema import TABLES
from curator.storage import Corpus

FORMATS = ("table", "csv", "json")
BATCH_ROWS = 10_000


class QueryError(CuratorError):
    """The SQL does not parse or names something that does not exist."""


def run_query(corpus: Corpus, sql: str) -> tuple[list[str], Iterator[tuple]]:
    """Column names and a row iterator of ``sql`` over the corpus's views."""
    if not corpus.table_parts("images"):
        raise CuratorError(f"{corpus.url} has no index: run `curator build` first")
    con = connect(corpus)
    try:
        cur = con.execute(sql)
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        raise QueryError(f"query failed: {first} (tables: {', '.join(TABLES)})") from None
    if cur.description is None:
        return [], iter(())
    names = [d[0] for d in cur.description]

    def batches():
        while chunk := cur.fetchmany(BATCH_ROWS):
            yield from chunk

    return names, batches()


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, list | dict):
        return json.dumps(v, ensure_ascii=False, default=str)
    return str(v)


def write_result(names: list[str], rows: Iterator[tuple], fmt: str, fh: io.TextIOBase, limit: int | None) -> int:
    """Write rows in ``fmt``; return how many. A table is aligned, so it is buffered (up to ``limit``)."""
    if fmt not in FORMATS:
        raise CuratorError(f"unknown format '{fmt}' (known: {', '.join(FORMATS)})")
    n = 0
    if fmt == "csv":
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(names)
        for r in rows:
            w.writerow([_cell(v) for v in r])
            n += 1
    elif fmt == "json":  # JSON Lines: one object per row, streamable
        for r in rows:
            fh.write(json.dumps(dict(zip(names, r, strict=True)), ensure_ascii=False, default=str) + "\n")
            n += 1
    else:
        body = []
        for r in rows:
            if limit is not None and n >= limit:
                n += sum(1 for _ in rows) + 1
                break
            body.append([_cell(v) for v in r])
            n += 1
        widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(names)]
        fh.write("  ".join(h.ljust(w) for h, w in zip(names, widths, strict=True)).rstrip() + "\n")
        for b in body:
            fh.write("  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)).rstrip() + "\n")
        if len(body) < n:
            fh.write(f"... {n - len(body)} more rows (use --limit, or --format csv --output FILE)\n")
        fh.write(f"({n} row{'s' if n != 1 else ''})\n")
    return n


def query_to(corpus: Corpus, sql: str, fmt: str, output: Path | None, fh, limit: int | None = 200) -> int:
    names, rows = run_query(corpus, sql)
    if output is None:
        return write_result(names, rows, fmt, fh, limit)
    with open(output, "w", encoding="utf-8", newline="") as out:
        return write_result(names, rows, fmt, out, None)
