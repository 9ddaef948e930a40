"""Hugging Face export: Parquet per split with an ``Image`` feature, and a dataset card that types it.

``datasets.load_dataset(DIR)`` (normal or ``streaming=True``) reads the export with
no ``features=`` argument: the card's YAML front matter lists ``configs``
(``data_files`` per split) and ``dataset_info.features`` (the image as ``image``,
metadata as typed values, lists and structs). Shards are not the input: the
export reads the index tables through DuckDB and the image bytes from
``blobs/``, one batch of rows at a time, so memory is bounded by the batch.

One row per kept sample (``samples.status = 'keep'``) in its split, at its natural
frequency (mixture weights are a sharding choice, not part of the dataset). Column
types come from the index tables' schemas (curator.schema); captions are the
``sample_captions`` join (``triplet_id`` is null for a sample with no validated
caption). A label's boxes are typed as the index types them (``labels.boxes``:
x0, y0, x1, y1); free-form annotation payloads (a report's section, a VQA answer)
stay JSON strings; every other column has a fixed
shape and a type, the image's ``transform`` a struct.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from curator import __version__
from curator.blobs import LOCATIONS_SQL, BlobRef, blob_ext, read_blobs
from curator.errors import CorpusError, CuratorError
from curator.schema import ANNOTATIONS, CAPTIONS, IMAGES, SAMPLE_CAPTIONS, SAMPLES, SOURCES
from curator.storage import Corpus

log = logging.getLogger(__name__)

DATA_DIR = "data"
CARD = "README.md"
# Rows per Parquet row group and per DuckDB batch: the Hugging Face viewer and
# `datasets` read image Parquet a row group at a time, and they recommend ~100 rows.
ROW_GROUP_ROWS = 100
# Target bytes per Parquet file (the size `push_to_hub` uses).
MAX_FILE_BYTES = 500 * 1024**2


def _col(table: pa.Schema, name: str, as_name: str | None = None) -> tuple[str, pa.DataType]:
    """A column of the export typed as its index table types it (curator.schema is the one definition)."""
    return (as_name or name, table.field(name).type)


_LABEL = pa.struct(
    [_col(ANNOTATIONS, "text", "label"), _col(ANNOTATIONS, "value"), _col(ANNOTATIONS, "native"),
     _col(ANNOTATIONS, "source_id"), _col(ANNOTATIONS, "boxes"), _col(ANNOTATIONS, "payload")]
)  # fmt: skip
_TEXT = pa.struct(
    [_col(ANNOTATIONS, "kind"), _col(ANNOTATIONS, "text"), _col(ANNOTATIONS, "language"),
     _col(ANNOTATIONS, "source_id"), _col(ANNOTATIONS, "payload")]
)  # fmt: skip
_CAPTION = pa.struct(
    [_col(CAPTIONS, c) for c in ("caption", "language", "generator", "model", "prompt_id", "prompt_sha256")]
)
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

# The export's columns: the image, then the canonical member's provenance, then everything annotated.
SCHEMA = pa.schema(
    [
        ("image", IMAGE),
        _col(SAMPLES, "sample_id"),
        _col(SAMPLES, "split"),
        _col(IMAGES, "source_id"),
        _col(SOURCES, "license"),
        _col(SOURCES, "access"),
        _col(SAMPLES, "source_ids", "sources"),
        ("licenses", pa.list_(SOURCES.field("license").type)),
        *(
            _col(IMAGES, c)
            for c in (
                "original_uri",
                "original_sha256",
                "original_format",
                "frame_index",
                "plane",
                "image_sha256",
                "image_format",
                "width",
                "height",
                "bit_depth",
                "channels",
            )
        ),  # fmt: skip
        _col(SAMPLES, "modality"),
        _col(SAMPLES, "anatomy"),
        _col(SAMPLES, "department"),
        _col(IMAGES, "transform"),
        ("labels", pa.list_(_LABEL)),
        ("texts", pa.list_(_TEXT)),
        _col(SAMPLE_CAPTIONS, "triplet_id"),
        ("captions", pa.list_(_CAPTION)),
    ]
)

_ROWS = (
    """
WITH kept AS (SELECT * FROM samples WHERE status = 'keep' AND split = $split),
anns AS (
    SELECT DISTINCT mb.sample_id, a.source_id, a.kind, a.text, a.value, a.native, a.language, a.payload, a.boxes
    FROM members mb JOIN kept USING (sample_id) JOIN annotations a ON a.sample_id = mb.member_id
),
labs AS (
    SELECT sample_id, list({'label': text, 'value': value, 'native': native, 'source_id': source_id,
                            'boxes': coalesce(boxes, []),
                            'payload': payload} ORDER BY source_id, text, value, native, payload) AS labels
    FROM anns WHERE kind = 'label' GROUP BY sample_id
),
txts AS (
    SELECT sample_id, list({'kind': kind, 'text': text, 'language': language, 'source_id': source_id,
                            'payload': payload} ORDER BY source_id, kind, text, language, payload) AS texts
    FROM anns WHERE kind <> 'label' GROUP BY sample_id
),
caps AS (
    SELECT sc.sample_id, any_value(sc.triplet_id) AS triplet_id,
           list({'caption': c.caption, 'language': c.language, 'generator': c.generator, 'model': c.model,
                 'prompt_id': c.prompt_id, 'prompt_sha256': c.prompt_sha256}
                ORDER BY c.language, c.caption_index) AS captions
    FROM sample_captions sc JOIN kept USING (sample_id)
    JOIN captions c USING (triplet_id, language, caption_index)
    WHERE c.validation = 'ok'
    GROUP BY sc.sample_id
),
lics AS (
    SELECT mb.sample_id, list(DISTINCT src.license ORDER BY src.license) AS licenses
    FROM members mb JOIN kept USING (sample_id) JOIN sources src ON src.source_id = mb.source_id
    GROUP BY mb.sample_id
)
SELECT s.sample_id, s.split, i.source_id, src.license, src.access, list_sort(s.source_ids) AS sources,
       lics.licenses, i.original_uri, i.original_sha256, i.original_format, i.frame_index, i.plane,
       i.image_sha256, i.image_format, i.width, i.height, i.bit_depth, i.channels,
       s.modality, s.anatomy, s.department, i.transform,
       coalesce(labs.labels, []) AS labels, coalesce(txts.texts, []) AS texts, caps.triplet_id,
       coalesce(caps.captions, []) AS captions,
       b.pack AS blob_pack, b."offset" AS blob_offset, b.length AS blob_length
FROM kept s
JOIN images i ON i.sample_id = s.sample_id
JOIN sources src ON src.source_id = i.source_id
LEFT JOIN lics ON lics.sample_id = s.sample_id
LEFT JOIN labs ON labs.sample_id = s.sample_id
LEFT JOIN txts ON txts.sample_id = s.sample_id
LEFT JOIN caps ON caps.sample_id = s.sample_id
LEFT JOIN ("""
    + LOCATIONS_SQL
    + """) b ON b.image_sha256 = i.image_sha256
ORDER BY s.sample_id
"""
)
# where each row's image is (curator.blobs), located in the rows query once, not per batch; dropped before writing
_LOCATION = [("blob_pack", pa.string()), ("blob_offset", pa.int64()), ("blob_length", pa.int64())]


@dataclass
class HFExportResult:
    to: str
    splits: dict[str, int] = field(default_factory=dict)  # split -> rows
    split_bytes: dict[str, int] = field(default_factory=dict)  # split -> Parquet bytes
    files: list[str] = field(default_factory=list)  # relative to ``to``
    bytes: int = 0


def export_hf(
    corpus: Corpus,
    to: str,
    *,
    overwrite: bool = False,
    max_file_bytes: int = MAX_FILE_BYTES,
    progress: bool = True,
) -> HFExportResult:
    """Write ``to/data/<split>-NNNNN-of-NNNNN.parquet`` and ``to/README.md`` from a built corpus."""
    from curator.tables import connect

    out = Corpus(to)
    _prepare(out, overwrite)
    tables = ["samples", "members", "images", "sources", "annotations", "captions", "sample_captions", "blob_packs"]
    con = connect(corpus, tables)
    plan = con.execute(
        "SELECT s.split, count(*), coalesce(sum(i.image_bytes), 0) FROM samples s "
        "JOIN images i USING (sample_id) WHERE s.status = 'keep' GROUP BY s.split"
    ).fetchall()
    if not plan:
        raise CorpusError(f"{corpus.url} keeps no samples: nothing to export")
    result = HFExportResult(out.url)
    bar = tqdm(total=sum(n for _, n, _ in plan), desc="export hf", unit="sample", disable=None if progress else True)
    for split, nrows, nbytes in sorted(plan, key=lambda p: _split_order(p[0])):
        nfiles = max(1, min(nrows, math.ceil(nbytes / max_file_bytes)))
        counts = [nrows // nfiles + (i < nrows % nfiles) for i in range(nfiles)]
        reader = con.sql(_ROWS, params={"split": split}).to_arrow_reader(ROW_GROUP_ROWS)
        rows = _Rows(reader)
        for i, count in enumerate(counts):
            rel = f"{DATA_DIR}/{split}-{i:05d}-of-{nfiles:05d}.parquet"
            with out.open_atomic(rel) as fh, pq.ParquetWriter(fh, SCHEMA, compression="zstd") as writer:
                written = 0
                while written < count:
                    batch = rows.take(count - written)
                    writer.write_table(_with_images(corpus, batch), row_group_size=ROW_GROUP_ROWS)
                    written += batch.num_rows
                    bar.update(batch.num_rows)
            result.files.append(rel)
            result.split_bytes[split] = result.split_bytes.get(split, 0) + out.size(rel)
        reader.close()  # DuckDB holds one open result per connection
        result.splits[split] = nrows
    bar.close()
    result.bytes = sum(result.split_bytes.values())
    out.write_bytes(CARD, dataset_card(corpus, result).encode())
    return result


def _split_order(split: str) -> tuple[int, str]:
    order = ("train", "val", "test")
    return (order.index(split) if split in order else len(order), split)


def _prepare(out: Corpus, overwrite: bool) -> None:
    """Refuse a non-empty target unless asked; then remove the earlier export's files (a stale part would load)."""
    existing = out.find("")
    if not existing:
        return
    if not overwrite:
        raise CuratorError(f"{out.url} is not empty: choose an empty folder or pass --overwrite")
    for path in out.find(DATA_DIR):
        if path.endswith(".parquet"):
            out.fs.rm(path)
    out.remove(CARD)


class _Rows:
    """DuckDB's record batches cast to the export's types, handed out ``take(n)`` rows at a time."""

    def __init__(self, reader: pa.RecordBatchReader):
        self._batches = iter(reader)
        self._left = pa.table({})

    def take(self, n: int) -> pa.Table:
        if not self._left.num_rows:
            batch = next(self._batches, None)
            if batch is None:  # fewer rows than counted: an image row without its source, or a concurrent writer
                raise CorpusError("the index has fewer exportable rows than kept samples: run `curator verify`")
            located = SCHEMA.remove(0)
            for name, kind in _LOCATION:
                located = located.append(pa.field(name, kind))
            self._left = pa.Table.from_batches([batch]).cast(located)
        out = self._left.slice(0, n)
        self._left = self._left.slice(out.num_rows)
        return out


def _with_images(corpus: Corpus, meta: pa.Table) -> pa.Table:
    """The batch with its image column: blobs read grouped by pack (curator.blobs), each checked against its sha256."""
    shas = meta["image_sha256"].to_pylist()
    exts = [blob_ext(f) for f in meta["image_format"].to_pylist()]
    where = zip(*(meta[name].to_pylist() for name, _ in _LOCATION), strict=True)
    refs = [BlobRef(sha, ext, p, off or 0, n or 0) for sha, ext, (p, off, n) in zip(shas, exts, where, strict=True)]
    data = read_blobs(corpus, refs)
    meta = meta.drop_columns([name for name, _ in _LOCATION])
    names = [f"{sid}.{ext}" for sid, ext in zip(meta["sample_id"].to_pylist(), exts, strict=True)]
    images = pa.StructArray.from_arrays([pa.array(data, pa.binary()), pa.array(names, pa.string())], fields=list(IMAGE))
    return meta.add_column(0, SCHEMA.field("image"), images)


# -- the dataset card ------------------------------------------------------------

_DTYPES = {
    pa.string(): "string",
    pa.binary(): "binary",
    pa.bool_(): "bool",
    pa.int8(): "int8",
    pa.int16(): "int16",
    pa.int32(): "int32",
    pa.int64(): "int64",
    pa.float32(): "float32",
    pa.float64(): "float64",
}


def hf_features(schema: pa.Schema = SCHEMA) -> list[dict]:
    """``dataset_info.features`` in the card's YAML form: the image column as ``image``, the rest by Arrow type."""
    return [{"name": "image", "dtype": "image"} if f.name == "image" else _feature(f.name, f.type) for f in schema]


def _feature(name: str, typ: pa.DataType) -> dict:
    return {"name": name, **_shape(typ)}


def _shape(typ: pa.DataType) -> dict:
    if pa.types.is_list(typ):
        inner = _shape(typ.value_type)
        return {"list": inner["dtype"] if "dtype" in inner else inner if "list" in inner else inner["struct"]}
    if pa.types.is_struct(typ):
        return {"struct": [_feature(f.name, f.type) for f in typ]}
    if typ not in _DTYPES:
        raise TypeError(f"no Hugging Face dtype for {typ}")
    return {"dtype": _DTYPES[typ]}


def _yaml(value, indent: int = 0) -> list[str]:
    """Block YAML for dicts, lists and scalars (strings JSON-quoted, which YAML reads as double-quoted)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{key}:")
                lines.extend(_yaml(item, indent + 2 if isinstance(item, dict) else indent))
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
    else:
        for item in value:
            sub = _yaml(item, indent + 2) if isinstance(item, dict | list) else [f"{pad}  {_scalar(item)}"]
            lines.append(f"{pad}- {sub[0].lstrip()}")
            lines.extend(sub[1:])
    return lines


def _scalar(value) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, dict | list):
        return "{}" if isinstance(value, dict) else "[]"
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)


# strings YAML reads back as the same string without quotes (no booleans, nulls or numbers)
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./*-]*")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "y", "n", "null"}


def dataset_card(corpus: Corpus, result: HFExportResult) -> str:
    """README.md: YAML front matter that ``datasets`` and the Hub read, then the sources and their licences."""
    from curator.tables import connect, rows

    splits = list(result.splits)
    meta = {
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"{DATA_DIR}/{s}-*.parquet"} for s in splits],
            }
        ],
        "dataset_info": {
            "config_name": "default",
            "features": hf_features(),
            "splits": [
                {"name": s, "num_bytes": result.split_bytes[s], "num_examples": n} for s, n in result.splits.items()
            ],
        },
        # one licence per source, below; the Hub's single field cannot say that
        "license": "other",
        "tags": ["medical", "curator"],
    }
    con = connect(corpus, ["sources", "samples", "members"])
    sources = rows(
        con,
        "SELECT src.source_id, src.name, src.version, src.license, src.access, src.homepage, src.citation, "
        "count(DISTINCT mb.sample_id) AS samples FROM sources src "
        "JOIN members mb ON mb.source_id = src.source_id "
        "JOIN samples s ON s.sample_id = mb.sample_id AND s.status = 'keep' GROUP BY ALL ORDER BY src.source_id",
    )
    table = ["| source | version | licence | access | samples | homepage |", "| --- | --- | --- | --- | ---: | --- |"]
    table += [
        f"| {s['source_id']} ({s['name']}) | {s['version'] or ''} | {s['license']} | {s['access']} | "
        f"{s['samples']} | {s['homepage'] or ''} |"
        for s in sources
    ]
    cites = [f"- {s['source_id']}: {s['citation']}" for s in sources if s["citation"]]
    counts = ", ".join(f"{s}: {n}" for s, n in result.splits.items())
    body = [
        "# Medical image-text corpus",
        "",
        f"Exported by curator {__version__} from a built corpus ({counts} samples). One row per image;",
        "every row names its source, licence and original file. Load it with",
        '`datasets.load_dataset("<this folder>")` (add `streaming=True` to stream).',
        "",
        "Columns: `image` (the normalised image), the canonical member's provenance (`source_id`, `license`,",
        "`access`, `original_uri`, `original_sha256`, ...), `sources` and `licenses` of every source holding",
        "the image, `labels` and `texts` (each with its `source_id`; `boxes` typed x0, y0, x1, y1;",
        "`payload` is JSON: a report's section, a VQA answer), and the validated generated `captions` with",
        "generator, model and prompt.",
        "",
        "## Sources and licences",
        "",
        *table,
        "",
        "Use of each row is governed by its source's licence and terms of access.",
        "",
        "## Citations",
        "",
        *(cites or ["(none recorded)"]),
        "",
    ]
    return "---\n" + "\n".join(_yaml(meta)) + "\n---\n\n" + "\n".join(body)
