"""DuckDB over a corpus: every index table as a view on its Parquet parts (stages and audit both use it).

DuckDB scans the parts where they lie (a local folder, or any fsspec filesystem
registered with it), so a query over millions of rows streams instead of loading
whole tables into Python. A table with no parts yet is an empty view of its
schema, so a query naming it still runs.
"""

from __future__ import annotations

import atexit
import os
import shutil

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from curator.errors import CuratorError
from curator.schema import TABLES
from curator.storage import ROW_GROUP_ROWS, Corpus, scratch_folder

# DuckDB takes 80% of RAM by default. A bound makes the index step's joins and
# window functions spill to disk instead, so a corpus of millions of images runs on
# a laptop (400k rows: ~650 MiB unbounded, ~280 MiB at 256MB, same wall time).
MEMORY_ENV = "CURATOR_DUCKDB_MEMORY"
DEFAULT_MEMORY = "1GB"
ALLOCATOR_FLUSH = "16MB"


_spills: dict[tuple[str, int], str] = {}  # (scratch folder, pid) -> this process's spill folder in it


def _spill(corpus: Corpus) -> str:
    # DuckDB's default for an in-memory database is ./.tmp in the working directory. One
    # folder per process in the corpus's scratch space instead (storage.Corpus.scratch: the
    # corpus's disk, not the system temp dir), removed when the process exits; a killed
    # process's folder is removed by the corpus's next writer (storage.clean_leftovers).
    key = (corpus.scratch(), os.getpid())  # a forked worker gets a folder of its own
    if key not in _spills:
        _spills[key] = scratch_folder(corpus, "duckdb")
        atexit.register(_remove_spill, _spills[key])
    os.makedirs(_spills[key], exist_ok=True)  # again, should the corpus have been emptied meanwhile
    return _spills[key]


def _remove_spill(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    try:
        os.rmdir(os.path.dirname(path))  # the scratch folder too, once no other process uses it
    except OSError:
        pass


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def connect(corpus: Corpus, tables: list[str] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per index table."""
    con = duckdb.connect(":memory:")
    limit = os.environ.get(MEMORY_ENV, DEFAULT_MEMORY)
    try:
        con.execute(f"SET memory_limit = '{limit.replace(chr(39), '')}'")
    except duckdb.Error:
        raise CuratorError(f"{MEMORY_ENV}={limit!r} is not a memory size DuckDB understands (e.g. 2GB)") from None
    # DuckDB's allocator keeps up to 128 MiB (512 MiB after bulk frees) of freed memory for
    # reuse; returned early instead, a shard stage's records pass peaks ~70 MiB lower at 100k
    # samples (bench memory) at no measurable cost in time
    con.execute(f"SET allocator_flush_threshold = '{ALLOCATOR_FLUSH}'")
    con.execute(f"SET allocator_bulk_deallocation_flush_threshold = '{ALLOCATOR_FLUSH}'")
    con.execute(f"SET temp_directory = {_quote(_spill(corpus))}")
    if corpus.protocol not in ("file", "local"):
        con.register_filesystem(corpus.fs)
    for name in tables or TABLES:
        parts = corpus.table_parts(name)
        if corpus.protocol not in ("file", "local"):
            parts = [f"{corpus.protocol}://{p}" for p in parts]
        if parts:
            files = "[" + ", ".join(_quote(p) for p in parts) + "]"
            # every part of a table is written with its schema (curator.schema), so DuckDB binds
            # the first file's and trusts the rest: union_by_name would read and keep every
            # footer (490 MiB and 2.7 s for 3 tables of 3,900 parts, a 1M-sample corpus; 50 MiB, 0.1 s without)
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet({files})")
        else:
            con.register(f"_empty_{name}", TABLES[name].empty_table())
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM _empty_{name}")
    return con


def rows(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict]:
    """A query's result as dicts (for small results: a trace, a report's counts)."""
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def batches(con: duckdb.DuckDBPyConnection, sql: str, batch_rows: int = 65_536):
    """A query's result as Arrow record batches: memory bounded by the batch, not the result."""
    yield from con.sql(sql).to_arrow_reader(batch_rows)


def stream(con: duckdb.DuckDBPyConnection, sql: str, batch_rows: int = 65_536):
    """A query's rows as dicts, fetched a record batch at a time (for results of any size)."""
    for batch in batches(con, sql, batch_rows):
        yield from batch.to_pylist()


def parquet_url(corpus: Corpus, rel: str) -> str:
    """A corpus file as DuckDB names it in ``read_parquet`` (protocol-qualified off the local disk)."""
    path = corpus.path(rel)
    return _quote(path if corpus.protocol in ("file", "local") else f"{corpus.protocol}://{path}")


def write_batches(corpus: Corpus, rel: str, schema: pa.Schema, batches, row_group_rows: int = ROW_GROUP_ROWS) -> int:
    """Stream Arrow record batches (cast to ``schema``) into one Parquet file, atomically; return the row count.

    The path for table-sized outputs (a manifest of millions of keys, a staging
    file): batches go straight from DuckDB or Arrow to Parquet, never through
    per-row Python dicts.
    """
    count = 0
    with corpus.open_atomic(rel) as fh, pq.ParquetWriter(fh, schema, compression="zstd") as writer:
        for batch in batches:
            if batch.num_rows:
                writer.write_table(pa.Table.from_batches([batch]).select(schema.names).cast(schema), row_group_rows)
                count += batch.num_rows
        if count == 0:
            writer.write_table(schema.empty_table())
    return count


def write_table_part(corpus: Corpus, table: str, part: str, batches) -> int:
    """``write_batches`` into ``index/<table>/part-<part>.parquet`` with the table's schema."""
    return write_batches(corpus, f"{corpus.table_dir(table)}/part-{part}.parquet", TABLES[table], batches)
