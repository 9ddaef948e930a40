"""Parquet tables, and images embedded in them (Hugging Face releases such as PathVQA's).

A Hugging Face ``Image`` column is a struct ``{bytes, path}`` (or a plain binary
column): the image *is* the cell, there is no file to point at. The plan reads the
table a batch at a time and keeps, per row, only a reference: the first row in that
table holding the same bytes (so rows asking several questions about one image make
one sample) and the sha256 of the bytes; the pixels are read again by the unit that
indexes the row, one row group at a time (:class:`EmbeddedImages`). An image's
``original_uri`` is ``<table>#row<n>``: the table and the row an auditor opens.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from curator.errors import CardError, ReadError

# Rows decoded per batch while planning: bounded memory whatever the table's size.
BATCH_ROWS = 256


def _parquet(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise CardError(f"{path.name} is not a readable Parquet file: {exc}") from None


def columns(path: Path) -> list[str]:
    return list(_parquet(path).schema_arrow.names)


def image_bytes(value) -> bytes | None:
    """The bytes of a Hugging Face Image struct ``{bytes, path}`` or of a binary cell; None when empty."""
    if isinstance(value, dict):
        value = value.get("bytes")
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) and len(value) else None


def rows(path: Path, table: str, image_column: str | None) -> list[tuple[int, dict]]:
    """(row number, row) of a table; with ``image_column``, the image cell becomes a small reference dict.

    The reference holds ``uri`` (``<table>#row<n>`` of the first row with the same bytes),
    ``row`` (that row's number) and ``sha256``; an empty cell becomes None.
    """
    pf = _parquet(path)
    first_of: dict[str, int] = {}
    out: list[tuple[int, dict]] = []
    n = 0
    for batch in pf.iter_batches(batch_size=BATCH_ROWS):
        for row in batch.to_pylist():
            if image_column is not None:
                data = image_bytes(row.get(image_column))
                ref = None
                if data is not None:
                    sha = hashlib.sha256(data).hexdigest()
                    first = first_of.setdefault(sha, n)
                    ref = {"uri": f"{table}#row{first}", "row": first, "sha256": sha}
                row[image_column] = ref
            out.append((n, row))
            n += 1
    return out


class EmbeddedImages:
    """Reads one embedded image by (table, column, row), keeping the last row group decoded.

    A unit's rows are consecutive, so each row group is decoded about once per unit.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._cells: list = []
        self._start = 0
        self._file: tuple[str, object] | None = None  # the open table: its footer is read once

    def read(self, path: Path, column: str, row: int) -> bytes:
        if self._file is None or self._file[0] != str(path):
            self._file = (str(path), _parquet(path))
        pf = self._file[1]
        start = 0
        for group in range(pf.num_row_groups):
            size = pf.metadata.row_group(group).num_rows
            if row < start + size:
                key = (str(path), column, group)
                if key != self._key:
                    self._cells = pf.read_row_group(group, columns=[column]).column(0).to_pylist()
                    self._key, self._start = key, start
                data = image_bytes(self._cells[row - self._start])
                if data is None:
                    raise ReadError("bad_row", f"row {row}: the image cell '{column}' is empty")
                return data
            start += size
        raise ReadError("missing_file", f"row {row} is not in the table ({start} rows)")
