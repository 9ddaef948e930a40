"""query: SQL over a corpus's index tables (DuckDB), printed as a table or written as CSV/JSON.

Every table is a view of the same name: sources, images, annotations, captions,
rejects, shards, samples, members, duplicates, leakage, instructions (the instruct
stage's training entries; ``turns`` is a list of {from, value} structs, so
``turns[2].value`` is the first answer). Results stream from
DuckDB in batches, so writing a million-row CSV never holds it in memory.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
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
    """The SQL does not parse, names something that does not exist, or is not a read."""


# PRAGMAs that only report; any other (and COPY, ATTACH, SET, CREATE, INSERT, CALL...) is refused
READ_PRAGMAS = frozenset(
    {
        "table_info",
        "show",
        "show_tables",
        "show_tables_expanded",
        "version",
        "database_size",
        "storage_info",
        "functions",
        "collations",
        "platform",
        "user_agent",
        "metadata_info",
    }
)
_EXPLAIN = re.compile(r"^\s*explain(\s+analy[sz]e)?\s+", re.IGNORECASE)
_PRAGMA = re.compile(r"^\s*pragma\s+([a-z_]+)", re.IGNORECASE)


def check_read_only(con, sql: str) -> None:
    """Refuse anything but reads: SELECT/WITH/FROM/SHOW/DESCRIBE/SUMMARIZE, EXPLAIN of a read, reporting PRAGMAs.

    ``query`` is an audit tool: ``COPY ... TO`` or ``ATTACH`` would write files
    and ``SET`` would change what the next statement reads.
    """
    statements = con.extract_statements(sql)
    for st in statements:
        kind = st.type.name
        text = st.query.strip()
        if kind == "EXPLAIN":
            inner = con.extract_statements(_EXPLAIN.sub("", text, count=1))
            ok = len(inner) == 1 and inner[0].type.name == "SELECT"
        elif kind == "PRAGMA":
            m = _PRAGMA.match(text)
            ok = bool(m) and m[1].lower() in READ_PRAGMAS
        else:
            ok = kind == "SELECT"
        if not ok:
            first = text.split(None, 1)[0].upper() if text else kind
            raise QueryError(
                f"query refused: {first} is not a read; use SELECT, WITH, SHOW, DESCRIBE, EXPLAIN or a reporting PRAGMA"
            )


def _tz_as_text(con, sql: str, cur):
    """Re-run a query whose result has TIMESTAMP WITH TIME ZONE columns with them cast to text.

    DuckDB needs pytz to hand such values to Python; as text they print and export the same.
    """
    tz = [d[0] for d in cur.description if "WITH TIME ZONE" in str(d[1]).upper()]
    if not tz or len({d[0] for d in cur.description}) != len(cur.description):
        return cur
    body = sql.strip().rstrip(";")
    replace = ", ".join(
        f'CAST("{c.replace(chr(34), chr(34) * 2)}" AS VARCHAR) AS "{c.replace(chr(34), chr(34) * 2)}"' for c in tz
    )
    return con.execute(f"SELECT * REPLACE ({replace}) FROM ({body})")


def run_query(corpus: Corpus, sql: str) -> tuple[list[str], Iterator[tuple]]:
    """Column names and a row iterator of ``sql`` over the corpus's views."""
    if not corpus.table_parts("images"):
        raise CuratorError(f"{corpus.url} has no index: run `curator build` first")
    con = connect(corpus)
    try:
        check_read_only(con, sql)
        cur = con.execute(sql)
        if cur.description is not None:
            cur = _tz_as_text(con, sql, cur)
    except duckdb.Error as exc:
        raise _failed(exc) from None
    if cur.description is None:
        return [], iter(())
    names = [d[0] for d in cur.description]

    def batches():
        while True:
            try:
                chunk = cur.fetchmany(BATCH_ROWS)
            except (duckdb.Error, ImportError) as exc:  # a value Python cannot take (ImportError: pytz)
                raise _failed(exc) from None
            if not chunk:
                return
            yield from chunk

    return names, batches()


def _failed(exc: Exception) -> QueryError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return QueryError(f"query failed: {first} (tables: {', '.join(TABLES)})")


def _json_value(v):
    """A value JSON can hold: NaN and infinities become null, bytes base64, nested lists and dicts likewise."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(v)).decode("ascii")
    if isinstance(v, list | tuple):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    return v


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
            row = {k: _json_value(v) for k, v in zip(names, r, strict=True)}
            fh.write(json.dumps(row, ensure_ascii=False, allow_nan=False, default=str) + "\n")
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
