"""The corpus directory: fsspec paths, atomic writes, completion markers, table parts.

Everything a build writes goes through :class:`Corpus`, so a local folder and an
``s3://bucket/prefix`` behave alike. A file appears under its final name only when
complete: on a local disk it is written under a temporary name and renamed; on an
object store (s3, gcs, azure) the upload itself is atomic (a single PUT, or a
multipart upload that is completed only on a clean close and aborted on error), so
it is written in place: a temporary object plus ``mv`` would cost a server-side
copy and a delete per file. A stage unit is done only when its marker exists, so a
killed run leaves nothing that a re-run would mistake for finished.

Credentials and endpoints are never passed or stored here: fsspec and the backend
take them from their standard places (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
``AWS_ENDPOINT_URL`` and ``~/.aws`` for s3, or fsspec's own configuration such as
``FSSPEC_S3_ENDPOINT_URL`` / ``~/.config/fsspec/*.json``).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from curator.errors import CorpusError
from curator.schema import TABLES

# Rows buffered per Parquet row group: large enough for good compression, small
# enough that a million-image source never sits in memory at once.
ROW_GROUP_ROWS = 4096

# Backends whose uploads become visible only when complete (single PUT, or a
# multipart/resumable upload committed on close): written in place, no rename.
ATOMIC_UPLOAD_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
HASH_CHUNK = 8 * 1024**2


class Corpus:
    """One build's output: index tables, encoded image blobs, shards and markers."""

    def __init__(self, url: str):
        self.url = url.rstrip("/") or url
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.atomic_upload = self.protocol in ATOMIC_UPLOAD_PROTOCOLS
        if self.protocol not in ("file", "local"):
            # fsspec reuses filesystem instances, and s3fs caches listings in them:
            # what another process (an earlier, killed run) wrote would stay unseen.
            self.fs.invalidate_cache()
        if self.atomic_upload:
            bucket = self.root.split("/", 1)[0]
            if not self.fs.exists(bucket):
                raise CorpusError(
                    f"{self.url}: bucket '{bucket}' not found or not accessible with the current credentials "
                    "(AWS_* environment variables, ~/.aws, or fsspec configuration)"
                )

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def uri(self, *parts: str) -> str:
        """A full URL (with protocol) for readers outside fsspec, e.g. webdataset."""
        path = self.path(*parts)
        return path if self.protocol in ("file", "local") else f"{self.protocol}://{path}"

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    # -- atomic writes -----------------------------------------------------
    def _tmp(self, path: str) -> str:
        head, _, tail = path.rpartition("/")
        return f"{head}/.tmp-{uuid.uuid4().hex[:12]}-{tail}"

    def write_bytes(self, rel: str, data: bytes) -> None:
        if self.atomic_upload:
            self.fs.pipe_file(self.path(rel), data)  # one PUT: visible only when complete
            return
        path = self.path(rel)
        self.fs.makedirs(path.rpartition("/")[0], exist_ok=True)
        tmp = self._tmp(path)
        with self.fs.open(tmp, "wb") as fh:
            fh.write(data)
        self.fs.mv(tmp, path)

    def size(self, rel: str) -> int:
        return int(self.fs.size(self.path(rel)))

    def sha256(self, rel: str) -> str:
        """The sha256 of a stored file, streamed (a shard can be a GiB)."""
        digest = hashlib.sha256()
        with self.fs.open(self.path(rel), "rb", block_size=HASH_CHUNK) as fh:
            while chunk := fh.read(HASH_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def remove(self, rel: str) -> None:
        path = self.path(rel)
        if self.fs.exists(path):
            self.fs.rm(path)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open(self.path(rel), "rb") as fh:
            return fh.read()

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode())

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def open_atomic(self, rel: str) -> AtomicFile:
        return AtomicFile(self, rel)

    # -- markers -----------------------------------------------------------
    def marker(self, stage: str, unit: str) -> dict | None:
        rel = f"_markers/{stage}/{unit}.json"
        return self.read_json(rel) if self.exists(rel) else None

    def set_marker(self, stage: str, unit: str, payload: dict) -> None:
        self.write_json(f"_markers/{stage}/{unit}.json", payload)

    def clear_marker(self, stage: str, unit: str) -> None:
        rel = self.path(f"_markers/{stage}/{unit}.json")
        if self.fs.exists(rel):
            self.fs.rm(rel)

    # -- tables --------------------------------------------------------------
    def table_dir(self, table: str) -> str:
        return f"index/{table}"

    def write_table(self, table: str, part: str, rows: Iterable[dict]) -> int:
        """Write rows into ``index/<table>/part-<part>.parquet``; return the row count."""
        with self.table_writer(table, part) as writer:
            for row in rows:
                writer.append(row)
        return writer.count

    def table_writer(self, table: str, part: str) -> TableWriter:
        return TableWriter(self, table, part)

    def table_parts(self, table: str) -> list[str]:
        base = self.path(self.table_dir(table))
        if not self.fs.exists(base):
            return []
        return sorted(p for p in self.fs.ls(base, detail=False) if p.rsplit("/", 1)[-1].startswith("part-"))

    def remove_table_part(self, table: str, part: str) -> None:
        path = self.path(f"{self.table_dir(table)}/part-{part}.parquet")
        if self.fs.exists(path):
            self.fs.rm(path)

    def read_table(self, table: str, columns: list[str] | None = None, required: bool = True) -> pa.Table:
        parts = self.table_parts(table)
        schema = TABLES[table]
        if not parts:
            if required:
                raise CorpusError(f"{self.url} has no '{table}' table: run the stage that writes it first")
            return schema.empty_table() if columns is None else schema.empty_table().select(columns)
        tables = []
        for path in parts:
            with self.fs.open(path, "rb") as fh:
                tables.append(pq.read_table(fh, columns=columns, schema=schema))
        return pa.concat_tables(tables)

    def rel(self, path: str) -> str:
        """A full fsspec path back to one relative to the corpus root."""
        return path[len(self.root.rstrip("/")) + 1 :]

    def find(self, rel: str) -> list[str]:
        base = self.path(rel)
        return sorted(self.fs.find(base)) if self.fs.exists(base) else []

    def ls(self, rel: str) -> list[str]:
        base = self.path(rel)
        if not self.fs.exists(base):
            return []
        return sorted(self.fs.ls(base, detail=False))


class AtomicFile:
    """A writable file that appears under its final name only when closed cleanly."""

    def __init__(self, corpus: Corpus, rel: str):
        self.corpus = corpus
        self.path = corpus.path(rel)
        self.tmp = corpus._tmp(self.path)
        self._fh = None

    def __enter__(self):
        if self.corpus.atomic_upload:
            self._fh = self.corpus.fs.open(self.path, "wb")
            return self._fh
        self.corpus.fs.makedirs(self.path.rpartition("/")[0], exist_ok=True)
        self._fh = self.corpus.fs.open(self.tmp, "wb")
        return self._fh

    def __exit__(self, exc_type, exc, tb):
        if self.corpus.atomic_upload:
            if exc_type is None:
                self._fh.close()  # completes the upload: the object appears now, whole
            else:
                # close() would commit what was written so far: abort the upload instead
                self._fh.discard()
                self._fh.closed = True
            return False
        self._fh.close()
        if exc_type is None:
            self.corpus.fs.mv(self.tmp, self.path)
        else:
            try:
                self.corpus.fs.rm(self.tmp)
            except OSError:
                pass
        return False


class TableWriter:
    """Streams rows into one table part, a row group at a time, committed on clean exit."""

    def __init__(self, corpus: Corpus, table: str, part: str):
        self.schema = TABLES[table]
        self._file = corpus.open_atomic(f"{corpus.table_dir(table)}/part-{part}.parquet")
        self._buffer: list[dict] = []
        self.count = 0

    def __enter__(self) -> TableWriter:
        self._writer = pq.ParquetWriter(self._file.__enter__(), self.schema, compression="zstd")
        return self

    def append(self, row: dict) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=self.schema))
            self.count += len(self._buffer)
            self._buffer = []

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._flush()
                if self.count == 0:
                    self._writer.write_table(self.schema.empty_table())
            self._writer.close()
        finally:
            self._file.__exit__(exc_type, exc, tb)
        return False
