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
import logging
import os
import socket
import uuid
from collections.abc import Iterable
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from curator import testhooks
from curator.errors import CorpusError
from curator.schema import TABLES

# Rows buffered per Parquet row group: large enough for good compression, small
# enough that a million-image source never sits in memory at once.
ROW_GROUP_ROWS = 4096

# Backends whose uploads become visible only when complete (single PUT, or a
# multipart/resumable upload committed on close): written in place, no rename.
ATOMIC_UPLOAD_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
HASH_CHUNK = 8 * 1024**2
# A local corpus's scratch space (DuckDB spill folders): inside it, so a corpus on a big disk
# spills there, never into a small system /tmp, and the corpus's next writer cleans it.
SCRATCH = ".scratch"
# Where an object-store corpus's scratch lives on this machine: <base>/<hash of the corpus URL>.
SCRATCH_ENV = "CURATOR_SCRATCH"


class Corpus:
    """One build's output: index tables, encoded image blobs, shards and markers."""

    def __init__(self, url: str):
        if not str(url).strip():
            # "" would resolve to the working directory and scatter a corpus through it
            raise CorpusError("--out is empty: give a corpus folder or an fsspec URL (s3://bucket/prefix)")
        url = str(url)
        self.url = url.rstrip("/") or url
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.atomic_upload = self.protocol in ATOMIC_UPLOAD_PROTOCOLS
        if self.protocol not in ("file", "local"):
            # fsspec reuses filesystem instances, and s3fs caches listings in them:
            # what another process (an earlier, killed run) wrote would stay unseen.
            self.fs.invalidate_cache()
        if self.protocol in ("file", "local"):
            _check_local_out(self.root)
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

    def scratch(self) -> str:
        """This corpus's local scratch folder (not created here): ``<out>/.scratch`` for a local corpus.

        An object-store corpus, or a local one this user may not write (an auditor's
        read-only copy), gets a folder keyed by the corpus URL under ``$CURATOR_SCRATCH``
        (default ``~/.cache/curator/scratch``): never the system temp dir, and the same
        folder on every run, so the next run on this machine finds what a killed one left.
        """
        if self.protocol in ("file", "local") and os.access(self._existing_parent(self.root), os.W_OK):
            return os.path.join(self.root, SCRATCH)
        base = os.environ.get(SCRATCH_ENV) or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "curator", "scratch"
        )
        key = hashlib.sha256(f"{self.protocol}://{self.root}".encode()).hexdigest()[:16]
        return os.path.join(base, key)

    @staticmethod
    def _existing_parent(path: str) -> str:
        while path and not os.path.exists(path) and os.path.dirname(path) != path:
            path = os.path.dirname(path)
        return path

    # -- atomic writes -----------------------------------------------------
    def _tmp(self, path: str) -> str:
        head, _, tail = path.rpartition("/")
        return f"{head}/.tmp-{uuid.uuid4().hex[:12]}-{tail}"

    def write_bytes(self, rel: str, data: bytes) -> None:
        if self.atomic_upload:
            self.fs.pipe_file(self.path(rel), data)  # one PUT: visible only when complete
            testhooks.reached("commit", rel)
            return
        path = self.path(rel)
        self.fs.makedirs(path.rpartition("/")[0], exist_ok=True)
        tmp = self._tmp(path)
        with self.fs.open(tmp, "wb") as fh:
            fh.write(data)
        testhooks.reached("write", rel, len(data))
        self.fs.mv(tmp, path)
        testhooks.reached("commit", rel)

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


def _check_local_out(root: str) -> None:
    """A local --out is a folder, or can become one: not a file, not below a file."""
    import os

    path = root
    while path and not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if path and os.path.exists(path) and not os.path.isdir(path):
        raise CorpusError(f"Not a directory: {path} (--out must be a folder, or a path where one can be made)")


class AtomicFile:
    """A writable file that appears under its final name only when closed cleanly."""

    def __init__(self, corpus: Corpus, rel: str):
        self.corpus = corpus
        self.rel = rel
        self.path = corpus.path(rel)
        self.tmp = corpus._tmp(self.path)
        self._fh = None

    def __enter__(self):
        if self.corpus.atomic_upload:
            self._fh = self.corpus.fs.open(self.path, "wb")
        else:
            self.corpus.fs.makedirs(self.path.rpartition("/")[0], exist_ok=True)
            self._fh = self.corpus.fs.open(self.tmp, "wb")
        if os.environ.get(testhooks.KILL_ENV):
            return _CountedFile(self._fh, self.rel)
        return self._fh

    def __exit__(self, exc_type, exc, tb):
        if self.corpus.atomic_upload:
            if exc_type is None:
                self._fh.close()  # completes the upload: the object appears now, whole
                testhooks.reached("commit", self.rel)
            else:
                # close() would commit what was written so far: abort the upload instead
                self._fh.discard()
                self._fh.closed = True
            return False
        self._fh.close()
        if exc_type is None:
            self.corpus.fs.mv(self.tmp, self.path)
            testhooks.reached("commit", self.rel)
        else:
            try:
                self.corpus.fs.rm(self.tmp)
            except OSError:
                pass
        return False


class _CountedFile:
    """A file being written, counting its bytes for a kill test's ``write:`` point (testhooks)."""

    def __init__(self, fh, rel: str):
        self._fh, self._rel = fh, rel

    def write(self, data) -> int:
        written = self._fh.write(data)
        testhooks.reached("write", self._rel, len(data))
        return written

    def __getattr__(self, name):
        return getattr(self._fh, name)


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


# -- one writer per corpus -----------------------------------------------------------------
LOCK = "_lock.json"
# A holder refreshes its lock this often; one not refreshed for LEASE_SECONDS is stale
# (a killed run on another machine). On the same machine a dead pid is stale at once.
LEASE_SECONDS = 120.0
_HEARTBEAT_SECONDS = LEASE_SECONDS / 4
_held: dict[str, list] = {}  # corpus path -> [holder record, depth, heartbeat stop event]


class LockedError(CorpusError):
    """Another build or stage holds the corpus."""


def _holder_record(command: str) -> dict:
    import getpass
    import os
    import socket
    import time

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    now = time.time()
    return {
        "command": command,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "user": user,
        "since": now,
        "heartbeat": now,
        "token": uuid.uuid4().hex,
    }


def _describe(record: dict) -> str:
    import datetime as dt

    since = dt.datetime.fromtimestamp(float(record.get("since", 0)), dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"'{record.get('command', '?')}' by {record.get('user', '?')}@{record.get('host', '?')} "
        f"pid {record.get('pid', '?')} since {since}"
    )


def _is_stale(record: dict) -> bool:
    import os
    import socket
    import time

    if record.get("host") == socket.gethostname():
        try:
            os.kill(int(record.get("pid", -1)), 0)
        except ProcessLookupError:
            return True  # the holder died (SIGKILL, OOM, power): its lock is ours to take
        except (PermissionError, ValueError, OverflowError):
            pass
        else:
            return False
    return time.time() - float(record.get("heartbeat", 0)) > LEASE_SECONDS


class _LockBackend:
    """Create-if-absent, read, replace-if-ours and delete for the lock object."""

    def __init__(self, corpus: Corpus):
        self.corpus = corpus
        self.path = corpus.path(LOCK)

    def create(self, record: dict) -> bool:
        data = json.dumps(record, sort_keys=True).encode()
        if self.corpus.atomic_upload:
            # a lease object written with a conditional put: S3 (and moto) refuse it with
            # 412 PreconditionFailed when the object exists, so exactly one writer wins
            bucket, _, key = self.path.partition("/")
            try:
                self.corpus.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            except (FileExistsError, OSError) as exc:
                if "Precondition" in str(exc) or isinstance(exc, FileExistsError) or "412" in str(exc):
                    return False
                raise
            return True
        import os

        self.corpus.fs.makedirs(self.corpus.root, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return True

    def read(self) -> dict | None:
        try:
            with self.corpus.fs.open(self.path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(raw)
            return record if isinstance(record, dict) else {}
        except ValueError:
            return {}  # half-written by a killed run: stale

    def delete(self) -> None:
        try:
            self.corpus.fs.rm(self.path)
        except FileNotFoundError:
            pass
        if not self.corpus.atomic_upload:
            return
        self.corpus.fs.invalidate_cache(self.path)

    def refresh(self, record: dict) -> None:
        current = self.read()
        if current and current.get("token") == record["token"]:
            self.corpus.write_bytes(LOCK, json.dumps(record, sort_keys=True).encode())


class writer_lock:  # noqa: N801 - used as a context manager, reads like one
    """Hold the corpus for one build or stage: ``with writer_lock(corpus, "build"): ...``.

    A second writer fails at once with one line naming the holder and since when.
    A lock whose holder is dead (same host, pid gone) or silent for LEASE_SECONDS is
    taken over. Re-entrant within a process (a build runs stages that each lock).
    Holding the lock, the corpus has no other writer, so ``.tmp-*`` leftovers of
    killed runs are removed on entry.
    """

    def __init__(self, corpus: Corpus, command: str):
        self.corpus = corpus
        self.command = command
        self.backend = _LockBackend(corpus)

    def __enter__(self) -> writer_lock:
        held = _held.get(self.backend.path)
        if held:
            held[1] += 1
            return self
        record = _holder_record(self.command)
        for _ in range(3):
            if self.backend.create(record):
                break
            other = self.backend.read()
            if other is None:
                continue  # released between our create and our read
            if not _is_stale(other):
                raise LockedError(f"{self.corpus.url} is held by {_describe(other)}; wait for it or stop it")
            logging.getLogger(__name__).warning("taking over a stale lock on %s: %s", self.corpus.url, _describe(other))
            self.backend.delete()
        else:
            raise LockedError(f"{self.corpus.url}: could not take the writer lock (another writer keeps racing)")
        import threading

        stop = threading.Event()
        _held[self.backend.path] = [record, 1, stop]
        threading.Thread(target=self._heartbeat, args=(record, stop), daemon=True).start()
        clean_leftovers(self.corpus)
        return self

    def _heartbeat(self, record: dict, stop) -> None:
        import time

        while not stop.wait(_HEARTBEAT_SECONDS):
            record["heartbeat"] = time.time()
            try:
                self.backend.refresh(record)
            except OSError:
                pass  # a missed heartbeat only shortens the lease

    def __exit__(self, exc_type, exc, tb) -> bool:
        held = _held[self.backend.path]
        held[1] -= 1
        if held[1] == 0:
            try:
                if exc_type is None:
                    write_seal(self.corpus)  # every finished writer leaves the corpus sealed
            finally:
                self._release(held)
        return False

    def _release(self, held: list) -> None:
        held[2].set()
        del _held[self.backend.path]
        current = self.backend.read()
        if current is not None and current.get("token") == held[0]["token"]:
            self.backend.delete()


def clean_leftovers(corpus: Corpus) -> list[str]:
    """Remove what killed writers left (call only while holding the writer lock); return what went.

    ``.tmp-*`` files of a local corpus; on an object store, multipart uploads under the
    corpus that were never completed (invisible, but each holds its parts' storage); and
    scratch folders (DuckDB spill) of processes of this machine that are gone.
    """
    removed = clean_scratch(corpus)
    if corpus.atomic_upload:
        removed += _abort_uploads(corpus)
    elif corpus.fs.exists(corpus.root):
        for path in corpus.fs.find(corpus.root):
            if path.rsplit("/", 1)[-1].startswith(".tmp-"):
                corpus.fs.rm(path)
                removed.append(corpus.rel(path))
    if removed:
        logging.getLogger(__name__).info("removed %d leftover(s) of a killed run", len(removed))
    return removed


def scratch_folder(corpus: Corpus, kind: str) -> str:
    """This process's own scratch folder of ``kind`` (e.g. duckdb) for ``corpus``, created; the name says whose."""
    path = os.path.join(corpus.scratch(), f"{kind}-{socket.gethostname()}-{os.getpid()}")
    os.makedirs(path, exist_ok=True)
    return path


class scratch_dir:  # noqa: N801 - a context manager, reads like one
    """``with scratch_dir(corpus, "card") as path:`` this process's scratch folder, removed on exit.

    For files a command needs beside the corpus for its run only (instead of the system
    temp dir, where a killed run's files would stay for good): a killed run's folder is
    removed by the corpus's next writer (:func:`clean_leftovers`).
    """

    def __init__(self, corpus: Corpus, kind: str):
        self.corpus, self.kind = corpus, kind

    def __enter__(self) -> str:
        self.path = scratch_folder(self.corpus, self.kind)
        return self.path

    def __exit__(self, *exc) -> bool:
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)
        try:
            os.rmdir(os.path.dirname(self.path))
        except OSError:
            pass  # another process's scratch is in it
        return False


def clean_scratch(corpus: Corpus) -> list[str]:
    """Remove scratch folders whose process (on this host) is gone, and the scratch folder once empty."""
    import shutil

    base = corpus.scratch()
    if not os.path.isdir(base):
        return []
    removed = []
    for name in sorted(os.listdir(base)):
        _, _, owner = name.partition("-")
        host, _, pid = owner.rpartition("-")
        alive = host != socket.gethostname() or not pid.isdigit() or _pid_alive(int(pid))
        if not alive:
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
            removed.append(f"{SCRATCH}/{name}")
    try:
        os.rmdir(base)
    except OSError:
        pass  # still in use (another process's, e.g. a `curator verify` now running)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        pass
    return True


def _abort_uploads(corpus: Corpus) -> list[str]:
    bucket, _, prefix = corpus.root.partition("/")
    if corpus.protocol not in ("s3", "s3a"):
        return []  # gcs/azure resumable uploads expire by themselves
    removed = []
    for upload in corpus.fs.list_multipart_uploads(bucket):
        key = upload.get("Key", "")
        if prefix and not key.startswith(prefix.rstrip("/") + "/"):
            continue
        corpus.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload["UploadId"])
        removed.append(f"{key} (unfinished upload)")
    return removed


# -- the seal --------------------------------------------------------------------------------
SEAL = "_seal.json"
SEAL_STAMPS = "_markers/seal-stamps.json"
# Written beside a sealed corpus but not part of it: the lock of a running writer, the seal
# itself and its stamp cache, the corpus card `curator report` writes into a local corpus, and
# the scratch space. shards/build.json is sealed (the build writes it before the seal): its
# start and end times make two identical builds' seals differ in that one entry, while every
# table part, blob and shard stays byte-identical.
UNSEALED = (LOCK, SEAL, SEAL_STAMPS)
UNSEALED_DIRS = ("report/", f"{SCRATCH}/")


def sealed_files(corpus: Corpus) -> list[str]:
    """Every file of the corpus the seal covers, relative and sorted."""
    if not corpus.fs.exists(corpus.root):
        return []
    out = []
    for path in corpus.fs.find(corpus.root):
        rel = corpus.rel(path)
        if rel in UNSEALED or rel.startswith(UNSEALED_DIRS):
            continue
        out.append(rel)
    return sorted(out)


def _stamp(info: dict) -> str:
    """What changes when a file is rewritten: size with mtime (local) or ETag (object stores)."""
    mtime = info.get("mtime") or info.get("LastModified") or info.get("created")
    return f"{info.get('size')}:{info.get('ETag') or info.get('etag') or ''}:{mtime}"


def write_seal(corpus: Corpus) -> dict[str, str]:
    """sha256 of every table part, blob, shard, index and marker, in ``_seal.json``.

    The seal holds only paths and hashes, so two builds of the same inputs have the same
    seal. A file whose size and mtime/ETag are those recorded at the previous seal keeps
    its hash (``_markers/seal-stamps.json``, outside the seal), so a re-run that changed
    nothing does not re-read a terabyte of shards; ``verify`` always recomputes every hash.
    """
    previous = read_seal(corpus) or {}
    stamps = corpus.read_json(SEAL_STAMPS) if corpus.exists(SEAL_STAMPS) else {}
    files, new_stamps = {}, {}
    for rel in sealed_files(corpus):
        stamp = _stamp(corpus.fs.info(corpus.path(rel)))
        reuse = rel in previous and stamps.get(rel) == stamp
        files[rel] = previous[rel] if reuse else corpus.sha256(rel)
        new_stamps[rel] = stamp
    if files != previous:  # a re-run that changed nothing leaves every byte and mtime alone
        corpus.write_json(SEAL, {"version": 1, "files": files})
    if new_stamps != stamps:
        corpus.write_json(SEAL_STAMPS, new_stamps)
    return files


def read_seal(corpus: Corpus) -> dict | None:
    """The seal's {relative path: sha256}, None when there is none; CorpusError when unreadable."""
    if not corpus.exists(SEAL):
        return None
    try:
        files = corpus.read_json(SEAL)["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not a mapping")
        return files
    except (ValueError, KeyError, TypeError) as exc:
        raise CorpusError(f"{corpus.url}/{SEAL} is unreadable ({exc}): re-run the build to reseal") from None


def damaged_parts(corpus: Corpus) -> list[tuple[str, str]]:
    """(relative path, why) of every table part that does not read page by page.

    A build checks this first, so a damaged part is named with what to do about it
    instead of surfacing as a DuckDB error from whichever stage reads it first.
    """
    damaged = []
    for table in TABLES:
        for path in corpus.table_parts(table):
            try:
                with corpus.fs.open(path, "rb") as fh:
                    for _ in pq.ParquetFile(fh).iter_batches(batch_size=65536):
                        pass
            except (pa.ArrowException, OSError, ValueError) as exc:
                first = (str(exc).splitlines() or [type(exc).__name__])[0]
                damaged.append((corpus.rel(path), first))
    return damaged


def check_parts(corpus: Corpus) -> None:
    damaged = damaged_parts(corpus)
    if damaged:
        rel, why = damaged[0]
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        raise CorpusError(
            f"{corpus.url}: table part {rel} is damaged ({why}){more}: delete it and run again, "
            "and the stage that wrote it redoes it (an ingest part: its source is re-ingested)"
        )
