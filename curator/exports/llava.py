"""LLaVA / InternVL / xtuner export of the instructions table.

Writes into one folder (local path or fsspec URL)::

    <split>.json        LLaVA and xtuner: a JSON list of {"id", "image", "conversations"}
    <split>.jsonl       InternVL: the same records, one per line
    internvl_meta.json  InternVL's meta file: {name: {root, annotation, data_augment, repeat_time, length}}
    images/<ab>/<sha256>.<ext>   each image once (unless --image-root)

``image`` is relative to the export folder, which is what LLaVA's ``--image_folder``
and InternVL's ``root`` are; with ``image_root`` the images are not copied and
``image`` names the corpus blob (``blobs/<ab>/<sha256>.<ext>``) below that root
(the corpus folder, or wherever it is mounted). The first human turn of every
record starts with ``<image>\\n``, and no other turn holds the token; turns
alternate human / gpt. ``per="image"`` (the default, IMAX's image-centric layout)
writes one record per image and language holding all of that image's entries as
one multi-turn conversation; ``per="entry"`` writes one record per entry.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field

from tqdm import tqdm

from curator.blobs import LOCATIONS_SQL, BlobRef, blob_ext, read_blobs
from curator.blobs import TABLE as BLOB_PACKS
from curator.errors import CorpusError, CuratorError
from curator.storage import Corpus

log = logging.getLogger(__name__)
IMAGE_TOKEN = "<image>"
META = "internvl_meta.json"
PER = ("image", "entry")

_JOINS = """
FROM instructions i
JOIN samples s ON s.sample_id = i.sample_id AND s.status = 'keep'
JOIN members c ON c.sample_id = i.sample_id AND c.canonical
JOIN images im ON im.sample_id = c.member_id
"""
ROWS_SQL = (
    "SELECT i.sample_id, i.split, i.language, i.entry_id, i.turns, im.image_sha256, im.image_format"
    + _JOINS
    + """{where}
ORDER BY CASE i.split WHEN 'train' THEN 0 WHEN 'val' THEN 1 WHEN 'test' THEN 2 ELSE 3 END, i.split,
         i.sample_id, i.language, i.entry_index
"""
)
# Every image the records name, once, with its place in its pack (blob_packs joined once, here),
# in pack order: a batch of IMAGE_BATCH images is a few merged ranged reads, not one read per image.
IMAGES_SQL = (
    """
SELECT * FROM (
    SELECT DISTINCT ON (im.image_sha256) im.image_sha256, im.image_format, im.source_id,
           b.pack, b."offset", b.length"""
    + _JOINS
    + "    LEFT JOIN ("
    + LOCATIONS_SQL
    + """) b ON b.image_sha256 = im.image_sha256
    {where}
    ORDER BY im.image_sha256, im.source_id
) ORDER BY pack NULLS LAST, "offset", image_sha256
"""
)
IMAGE_BATCH = 256


@dataclass
class ExportResult:
    to: str
    records: Counter = field(default_factory=Counter)  # split -> records
    entries: int = 0
    images: int = 0
    files: list[str] = field(default_factory=list)


def blob_rel(sha256: str, image_format: str) -> str:
    return f"blobs/{sha256[:2]}/{sha256}.{'png' if image_format == 'png' else 'jpg'}"


def conversation(turns: list[list[dict]]) -> list[dict]:
    """Entries' turns as one LLaVA conversation: ``<image>`` once, at the start of the first human turn."""
    out = [{"from": t["from"], "value": t["value"]} for entry in turns for t in entry]
    out[0] = {"from": "human", "value": f"{IMAGE_TOKEN}\n{out[0]['value']}"}
    return out


class _SplitWriter:
    """A split's JSON list and JSONL, streamed and each committed atomically on close."""

    def __init__(self, dest: Corpus, split: str):
        self.split = split
        self._files = [dest.open_atomic(f"{split}.json"), dest.open_atomic(f"{split}.jsonl")]
        self.json, self.jsonl = (f.__enter__() for f in self._files)
        self.json.write(b"[\n")
        self.count = 0

    def write(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False).encode()
        self.json.write((b",\n" if self.count else b"") + line)
        self.jsonl.write(line + b"\n")
        self.count += 1

    def close(self, error: BaseException | None = None) -> None:
        if error is None:
            self.json.write(b"\n]\n")
        for f in self._files:
            f.__exit__(type(error) if error else None, error, None)


def export_llava(
    corpus: Corpus,
    to: str,
    image_root: str | None = None,
    per: str = "image",
    splits: tuple[str, ...] = (),
    languages: tuple[str, ...] = (),
    progress: bool = True,
) -> ExportResult:
    from curator.tables import connect

    if per not in PER:
        raise CuratorError(f"per must be one of {', '.join(PER)}, not '{per}'")
    if not corpus.table_parts("instructions"):
        raise CorpusError(
            f"{corpus.url} has no 'instructions' table: run `curator instruct` (or a build with [instruct])"
        )
    if image_root and "://" not in image_root and not os.path.isdir(os.path.join(image_root, "blobs")):
        raise CuratorError(f"--image-root {image_root} has no blobs/ folder: give the corpus folder (or its mount)")
    if image_root and corpus.table_parts(BLOB_PACKS):
        raise CuratorError(
            f"--image-root names one file per image, and {corpus.url} keeps its images in packs "
            "(blobs/packs/): export without --image-root to copy them"
        )
    dest = Corpus(to)
    con = connect(corpus, ["instructions", "samples", "members", "images", BLOB_PACKS])
    where = []
    if splits:
        where.append("list_contains(?, i.split)")
    if languages:
        where.append("list_contains(?, i.language)")
    params = [list(p) for p in (splits, languages) if p]
    where_sql = ("WHERE " + " AND ".join(where)) if where else ""
    sql = ROWS_SQL.format(where=where_sql)
    total = con.execute(f"SELECT count(*) FROM ({sql})", params).fetchall()[0][0]
    result = ExportResult(dest.url)
    if not image_root:
        result.images = _copy_images(corpus, dest, con, IMAGES_SQL.format(where=where_sql), params, progress)
    writers: dict[str, _SplitWriter] = {}
    bar = tqdm(total=total, desc="export llava", unit="entry", disable=None if progress else True, leave=False)
    group: list[dict] = []

    def flush() -> None:
        if not group:
            return
        first = group[0]
        rel = blob_rel(first["image_sha256"], first["image_format"])
        image = rel if image_root else "images/" + rel.removeprefix("blobs/")
        writer = writers.get(first["split"]) or writers.setdefault(first["split"], _SplitWriter(dest, first["split"]))
        if per == "image":
            suffix = "" if first["language"] == "en" else f"-{first['language']}"
            records = [(first["sample_id"] + suffix, [r["turns"] for r in group])]
        else:
            records = [(r["entry_id"], [r["turns"]]) for r in group]
        for rid, turns in records:
            writer.write({"id": rid, "image": image, "conversations": conversation(turns)})
            result.records[first["split"]] += 1
        result.entries += len(group)
        group.clear()

    error: BaseException | None = None
    try:
        for batch in con.sql(sql, params=params or None).to_arrow_reader(8192):
            for row in batch.to_pylist():
                bar.update()
                if group and (row["sample_id"], row["language"]) != (group[0]["sample_id"], group[0]["language"]):
                    flush()
                group.append(row)
        flush()
    except BaseException as exc:
        error = exc
        raise
    finally:
        bar.close()
        for w in writers.values():
            w.close(error)
    root = image_root or (dest.root if dest.protocol in ("file", "local") else dest.url)
    meta = {
        f"curator_{split}": {
            "root": root,
            "annotation": dest.uri(f"{split}.jsonl"),
            "data_augment": False,
            "repeat_time": 1,
            "length": w.count,
        }
        for split, w in writers.items()
    }
    dest.write_json(META, meta)
    result.files = sorted([f"{s}.json" for s in writers] + [f"{s}.jsonl" for s in writers] + [META])
    return result


def _copy_images(corpus: Corpus, dest: Corpus, con, sql: str, params: list, progress: bool) -> int:
    """Each image the records name, once, to ``images/<ab>/<sha256>.<ext>``, read a pack-ordered batch at a time."""
    copied = 0
    bar = tqdm(desc="export llava images", unit="image", disable=None if progress else True, leave=False)
    try:
        for batch in con.sql(sql, params=params or None).to_arrow_reader(IMAGE_BATCH):
            cols = [
                batch[c].to_pylist() for c in ("image_sha256", "image_format", "pack", "offset", "length", "source_id")
            ]
            rows = list(zip(*cols, strict=True))
            refs = [BlobRef(sha, blob_ext(fmt), pack, off or 0, n or 0, src) for sha, fmt, pack, off, n, src in rows]
            for (sha, fmt, *_), data in zip(rows, read_blobs(corpus, refs), strict=True):
                dest.write_bytes("images/" + blob_rel(sha, fmt).removeprefix("blobs/"), data)
            copied += len(rows)
            bar.update(len(rows))
    finally:
        bar.close()
    return copied
