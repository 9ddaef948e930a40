"""The adapter base: turns a layout's items into index rows or rejects, and counts both.

A subclass only walks its layout and yields :class:`Item` objects (a file, or a
table row naming a file, with its labels and texts). Everything else is shared
here: path safety, reading through the format readers, normalisation, sample
ids, keyed patient hashes, splits, annotations, and per-reason reject counts.
Every item ends as indexed rows or as exactly one reject; an indexed video or slide may
also leave rejects rows for its failed parts (a broken tile, the frames after damage).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from curator import phi, readers
from curator.config import IngestSettings
from curator.errors import CardError, ReadError
from curator.imaging import Encoded, normalise
from curator.readers import ReadOptions
from curator.registry import SourceCard
from curator.schema import transform_row
from curator.vocab import VOCABULARY_VERSION, canonical_anatomy, canonical_label, canonical_modality

log = logging.getLogger(__name__)

SPLITS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
    "tst": "test",
    "trn": "train",
    "validate": "val",
}


# The shared name of the normal / no-finding state (curator.vocab and the caption stage know it).
NORMAL = "no finding"
# Parameters that name files or folders below the root (csv, tables, subdir, image_dir(s), reports_dir,
# dataset_json, split_lists, csv_splits, table_splits): never column names, suffixes or regexes.
_PATH_PARAM = re.compile(r"^(csv|tables|subdir|dataset_json|split_lists|csv_splits|table_splits|\w*_dirs?)$")


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class Label:
    native: str
    value: str = "positive"  # positive | negative | uncertain
    # The card names this label as the normal / no-finding state (``normal_labels``:
    # "notumor", "No Finding", "normal"): indexed as the shared "no finding", never as a finding.
    normal: bool = False


@dataclass
class Text:
    kind: str  # caption | report
    text: str
    language: str
    payload: dict = field(default_factory=dict)


@dataclass
class Box:
    """A labelled region in the *reader's* frame pixels (x right, y down, [x0, y0, x1, y1) exclusive end).

    The base scales it to the output image's pixel coordinates after any resize and
    attaches it to the matching label annotation's payload (``boxes``): a box is
    where a label is, so it lives on the label rather than as a free-standing text.
    """

    label: Label
    box: tuple[float, float, float, float]


@dataclass
class Item:
    """One input the layout names: a file, or a table row pointing at a file."""

    uri: str
    path: Path | None = None
    labels: list[Label] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)
    modality: str | None = None
    anatomy: str | None = None
    patient_id: str | None = None
    study_id: str | None = None
    split: str | None = None
    frame_labels: dict[int, list[Label]] | None = None
    # keyed by frame index; a single-frame (2D) image's one frame has index None
    frame_boxes: dict[int | None, list[Box]] | None = None
    fmt: str | None = None
    reject: tuple[str, str] | None = None
    # 2D masks of this image (beside it by name, or in a mask folder): regions, never images.
    masks: list[Path] = field(default_factory=list)
    mask_label: str | None = None
    mask_threshold: int = 0
    min_region_pixels: int = 1
    # Series or volume the image belongs to (DICOM SeriesInstanceUID; one file per slice)
    # and the slice's position along it in mm, where the layout knows them.
    series_id: str | None = None
    slice_position: float | None = None
    # An image embedded in a table (a Hugging Face Parquet Image cell): ``path`` is the table,
    # this names the cell as (column, row); the bytes are read when the item is indexed.
    member: tuple[str, int] | None = None


@dataclass
class Indexed:
    item: Item
    images: list[dict]
    annotations: list[dict]
    blobs: list[Encoded]


@dataclass
class Rejected:
    row: dict
    # A failed part of a file whose other images were indexed (a slide tile, a video's frames
    # after damage): a rejects row of its own, but the file itself counts as indexed.
    part: bool = False


@dataclass
class Stats:
    seen: int = 0
    indexed_items: int = 0
    images: int = 0
    annotations: int = 0
    rejects: Counter = field(default_factory=Counter)
    blank_frames: int = 0  # blank slices/frames skipped inside files that gave other images
    # frames/tiles a reader left out by policy (near_duplicate, background, frame_limit), by reason
    skipped_frames: Counter = field(default_factory=Counter)
    # failed parts of indexed files (tile_corrupt, frames_lost), by reason; each is also a rejects row
    part_rejects: Counter = field(default_factory=Counter)
    # Files deliberately not read as inputs, by why: masks (regions of another image),
    # macOS '._*' resource forks, OS metadata, sidecar JSON/text, excluded by the card's globs.
    skipped: Counter = field(default_factory=Counter)
    split_conflicts: int = 0  # images that rows gave different splits (the strictest won)

    @property
    def rejected(self) -> int:
        return sum(self.rejects.values())

    def as_dict(self) -> dict:
        return {
            "seen": self.seen,
            "indexed_items": self.indexed_items,
            "images": self.images,
            "annotations": self.annotations,
            "rejects": dict(sorted(self.rejects.items())),
            "blank_frames": self.blank_frames,
            "skipped_frames": dict(sorted(self.skipped_frames.items())),
            "part_rejects": dict(sorted(self.part_rejects.items())),
            "skipped": dict(sorted(self.skipped.items())),
            "split_conflicts": self.split_conflicts,
        }

    def add(self, other: Stats) -> None:
        """Sum another unit's counts into these (a source's stats are its units' sums)."""
        self.seen += other.seen
        self.indexed_items += other.indexed_items
        self.images += other.images
        self.annotations += other.annotations
        self.rejects.update(other.rejects)
        self.blank_frames += other.blank_frames
        self.skipped_frames.update(other.skipped_frames)
        self.part_rejects.update(other.part_rejects)
        self.skipped.update(other.skipped)
        self.split_conflicts += other.split_conflicts

    @classmethod
    def from_dict(cls, d: dict) -> Stats:
        return cls(
            seen=d["seen"],
            indexed_items=d["indexed_items"],
            images=d["images"],
            annotations=d["annotations"],
            rejects=Counter(d["rejects"]),
            blank_frames=d.get("blank_frames", 0),
            skipped_frames=Counter(d.get("skipped_frames", {})),
            part_rejects=Counter(d.get("part_rejects", {})),
            skipped=Counter(d.get("skipped", {})),
            split_conflicts=d.get("split_conflicts", 0),
        )


def short_hash(*parts: object, n: int = 16) -> str:
    return hashlib.sha256("\x00".join("" if p is None else str(p) for p in parts).encode()).hexdigest()[:n]


# Formats whose readers decode the bytes ingest already read (see curator.readers.read).
IN_MEMORY_FORMATS = frozenset({"dicom", "nifti", "raster"})


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ReadError("corrupt", f"cannot read file: {exc.strerror or exc}") from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Adapter:
    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Params: ClassVar[type[BaseModel]] = Params
    # True for table layouts where several rows may name one image (captions, label tables).
    rows_repeat: ClassVar[bool] = False

    def __init__(self, card: SourceCard, root: Path):
        self.card = card
        self.given_root = Path(root).resolve()
        # --root may be the folder a download unpacks into or the archive's own top folder
        # inside it (busi/ or busi/Dataset_BUSI_with_GT/): the card names the top folders.
        self.root = _find_root(self.given_root, card.top_folders)
        self.params = self.Params.model_validate(card.adapter.params)
        self._check_param_paths()
        self._phi = phi.Redactor(b"", card.id, keyed_paths=card.identifiers_in_paths)
        # Counted by the layout while it walks ``items()`` (in the plan, in the driver); added
        # to the source's Stats once by ``_account``, never per unit.
        self.skipped: Counter = Counter()
        self.split_conflicts = 0
        # DICOM headers the plan's header pass parsed (path -> readers.dicom.DicomHeader): reads reuse them
        self.known_headers: dict = {}

    @property
    def root_used(self) -> str:
        """The folder the card read, relative to the given --root ('.' when it is the root itself)."""
        return self.root.relative_to(self.given_root).as_posix() if self.root != self.given_root else "."

    def _account(self, stats: Stats) -> None:
        stats.skipped.update(self.skipped)
        stats.split_conflicts += self.split_conflicts

    def _check_param_paths(self) -> None:
        """Every file or folder a parameter names resolves inside the source root, or the card is refused."""
        for name, value in self.params:
            if not _PATH_PARAM.search(name):
                continue
            if isinstance(value, dict):  # {table: split} names tables; image_dirs {table: folder} both
                values = [*value, *value.values()] if name == "image_dirs" else list(value)
            else:
                values = list(value) if isinstance(value, list | tuple) else [value]
            for v in values:
                if isinstance(v, str) and v and not (self.root / v).resolve().is_relative_to(self.root):
                    raise CardError(f"{self.card.id}: {name} '{v}' resolves outside the source root {self.root}")

    # -- what a subclass writes ------------------------------------------------
    def items(self) -> Iterator[Item]:
        raise NotImplementedError

    def read_options(self) -> ReadOptions:
        return ReadOptions(ct_window=self.card.image.window(), burned_in=self.card.image.burned_in)

    # -- helpers for subclasses --------------------------------------------------
    def files(self, under: Path | None = None) -> list[Path]:
        """Every file below a folder, sorted, so runs are deterministic."""
        base = under or self.root
        if not base.resolve().is_relative_to(self.root):
            raise CardError(f"{self.card.id}: '{base}' is outside the source root {self.root}")
        if not base.is_dir():
            raise CardError(f"{self.card.id}: folder '{base}' not found under {self.root}")
        # symlinks count too, dangling ones included: each ends indexed or rejected
        return sorted(p for p in base.rglob("*") if p.is_file() or p.is_symlink())

    def rel(self, path: Path) -> str:
        """The path relative to the root, without following links (a link keeps its own name)."""
        lexical = Path(os.path.abspath(path))
        if lexical.is_relative_to(self.root):
            return lexical.relative_to(self.root).as_posix()
        return path.resolve().relative_to(self.root).as_posix()

    def resolve(self, name: str) -> Path:
        """A path a table names, relative to the root; raises ReadError if it escapes or is missing."""
        candidate = (self.root / name).resolve()
        if not candidate.is_relative_to(self.root):
            raise ReadError("path_escape", f"'{name}' resolves outside the source root")
        if not candidate.is_file():
            raise ReadError("missing_file", f"'{name}' does not exist")
        return candidate

    # -- the shared loop ------------------------------------------------------------
    # Ingest runs it in two halves (curator.stages.ingest): the plan walks ``items()`` and
    # learns every identifier (``identity_paths`` -> a header pass -> ``learn``) before any
    # unit runs; each unit then indexes its items with ``index_items`` on an adapter that
    # was handed the learned identifiers (``identifiers`` / ``use_identifiers``). Learning
    # and redaction live only in ``learn``, ``_learn`` and ``_redact``, so nothing depends
    # on which file was read first or on how units are spread over workers.
    def run(self, settings: IngestSettings, stats: Stats) -> Iterator[Indexed | Rejected]:
        """A whole source in this process (both halves in a row): for tests and small tools."""
        from curator.readers.dicom import scan_header

        items = list(self._items())
        headers = {p: scan_header(p) for p in self.identity_paths(items)}
        self.headers_seen(items, headers)
        self.learn((h.identity for h in headers.values()), settings.patient_key())
        self.known_headers = {p: h.for_read() for p, h in headers.items()}
        yield from self.index_items(items, settings, stats)
        self._account(stats)

    def identity_paths(self, items: Iterable[Item]) -> list[Path]:
        """Files whose DICOM headers the plan reads for identifiers: every item a DICOM reader would open.

        Rejected items count too (a file at the wrong depth still names its patient's folder).
        """
        paths = []
        for item in items:
            path = item.path
            if path is None or (item.fmt or readers.format_of(path)) != "dicom":
                continue
            try:
                if path.resolve().is_relative_to(self.root) and path.is_file():
                    paths.append(path)
            except OSError:
                continue  # a link loop: the read rejects it, and it names nothing
        return paths

    def headers_seen(self, items: list[Item], headers: dict) -> None:
        """What a layout takes from the header pass (path -> readers.dicom.DicomHeader); dicom_folder: series."""

    def learn(self, identities: Iterable[dict], key: bytes) -> None:
        """Learn the identifiers of the header pass (the plan's job, before any unit runs)."""
        self._phi = phi.Redactor(key, self.card.id, keyed_paths=self.card.identifiers_in_paths)
        for identity in identities:
            self._learn(identity, key)

    @property
    def identifiers(self) -> dict[str, str]:
        """What ``learn`` found, to hand to the adapters that run the units (identifier -> keyed tag)."""
        return self._phi.state()

    def use_identifiers(self, identifiers: dict[str, str], key: bytes = b"") -> None:
        self._phi = phi.Redactor.from_state(key, self.card.id, self.card.identifiers_in_paths, identifiers)

    def index_items(
        self, items: Iterable[Item], settings: IngestSettings, stats: Stats, key: bytes | None = None
    ) -> Iterator[Indexed | Rejected]:
        """Index items (one unit's, or a whole source's) into rows; every item ends indexed or as one reject.

        Items naming the same image (``rows_repeat`` layouts) must come in the same call. ``key``
        is the patient key (default: this process's, ``settings.patient_key()``).
        """
        key = settings.patient_key() if key is None else key
        # the card's video/cine/slide policy reaches the readers whatever read_options a layout sets
        options = dataclasses.replace(self.read_options(), **self.card.image.stream_options())
        options.limits = self.card.image.limits()  # the card's bounds on what one input may cost
        options.known_headers = self.known_headers
        # An image that several rows annotate is one sample with several annotations
        # (kept only for layouts whose rows can repeat an image: it costs memory per image).
        self._samples: dict[str, tuple[list[tuple], set[str]]] = {}
        self._blank_frames = 0
        self._skipped: Counter = Counter()
        self._parts: list[dict] = []
        for item in items:
            stats.seen += 1
            try:
                if item.reject:
                    raise ReadError(*item.reject)
                outcome = self._index(item, settings, key, options)
            except ReadError as exc:
                stats.rejects[exc.reason] += 1
                row = self._reject(item.uri, exc.reason, exc.message)
                row["original_uri"] = self._redact(row["original_uri"])
                row["message"] = self._redact(row["message"])
                yield Rejected(row)
                continue
            stats.indexed_items += 1
            stats.images += len(outcome.images)
            stats.annotations += len(outcome.annotations)
            yield outcome
        stats.blank_frames += self._blank_frames
        stats.skipped_frames.update(self._skipped)
        for row in self._parts:
            row["original_uri"] = self._redact(row["original_uri"])
            row["message"] = self._redact(row["message"])
            stats.part_rejects[row["reason"]] += 1
            yield Rejected(row, part=True)

    def _items(self) -> Iterator[Item]:
        try:
            yield from self.items()
        except UnicodeDecodeError as exc:
            raise CardError(
                f"{self.card.id}: a table under {self.root} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                "save it as UTF-8"
            ) from None

    def _learn(self, identity: dict, key: bytes) -> None:
        self._phi.learn(identity)

    def _redact(self, text: str, tag: str | None = None) -> str:
        """Header identifiers (PS3.15 Annex E) removed from a path or message: see :mod:`curator.phi`.

        ``tag`` replaces every tag (sample ids use a fixed one, so they do not change with
        the secret key). Everything that is not an identifier survives verbatim.
        """
        return self._phi.redact(text, tag)

    def path_lookup(self, items: Iterable[Item]) -> dict[str, str]:
        """Redacted uri -> original uri of ``items`` (the never-shipped lookup of keyed layouts)."""
        return {r: item.uri for item in items if (r := self._phi.redact(item.uri)) != item.uri}

    def _reject(self, uri: str, reason: str, message: str) -> dict:
        # library messages name absolute paths; the index keeps paths relative to the source root
        message = message.replace(f"{self.root}{os.sep}", "").replace(str(self.root), ".")
        return {"source_id": self.card.id, "original_uri": uri, "stage": "ingest", "reason": reason, "message": message}

    def _index(self, item: Item, settings: IngestSettings, key: bytes, options: ReadOptions) -> Indexed:
        if item.path is None:
            raise ReadError("missing_file", f"'{item.uri}' names no file")
        for text in item.texts:
            if len(text.text) > (most := self.card.image.max_text_chars):
                raise ReadError("text_too_long", f"{text.kind} of {len(text.text)} characters (max {most})")
        if self.rows_repeat and item.uri in self._samples:
            return self._more_annotations(item, *self._samples[item.uri])
        if item.path.is_symlink():
            target = item.path.resolve()
            if not target.is_relative_to(self.root):
                raise ReadError("path_escape", f"'{item.uri}' is a link to a file outside the source root")
            if not target.is_file():
                raise ReadError("missing_file", f"'{item.uri}' is a link to nothing")
        fmt = item.fmt or readers.format_of(item.path)
        # Read once: hash the bytes the decoder gets. Videos and slides (read lazily,
        # never whole) are hashed from the path, streaming.
        if item.member is not None:
            fmt, data = "raster", self._embedded_bytes(item)
        else:
            data = _read_bytes(item.path) if fmt in IN_MEMORY_FORMATS else None
        # Readers may decode lazily (videos, slides): take the first frame for the file's
        # identity and format, then the rest one at a time.
        stream = readers.read(item.path, options, fmt=fmt, data=data)
        frames = iter(stream)
        first = next(frames, None)
        if first is None:
            raise ReadError("no_pixels", "no frames in file")
        # Peek one frame further: whether the file has more than one frame decides its series
        # key and slice positions (slices of one volume, frames of one cine or video are
        # never near-duplicates of each other). Streams have no cheap count, and holding one
        # decoded frame ahead costs no more than the loop below does anyway.
        second = next(frames, None)
        multi = second is not None
        frames = itertools.chain([first], [second] if multi else [], frames)
        original_sha = hashlib.sha256(data).hexdigest() if data is not None else sha256_file(item.path)
        del data
        if item.masks:
            from curator.adapters.regions import mask_boxes

            boxes = dict(item.frame_boxes or {})
            boxes[first.index] = boxes.get(first.index, []) + mask_boxes(item, first.pixels.shape[:2])
            item.frame_boxes = boxes
        source_format = first.meta.get("format") or fmt
        identity = first.identity
        patient = item.patient_id or identity.get("patient")
        study = item.study_id or identity.get("study")
        patient_key = _keyed(key, self.card.id, "patient", patient)
        study_key = _keyed(key, self.card.id, "study", study)
        # a volume's slices share a series by construction; a DICOM series by its UID
        series_key = _keyed(key, self.card.id, "series", item.series_id) or (
            f"file:{original_sha[:24]}" if multi else None
        )
        group = patient_key or study_key or f"item:{item.uri}"
        uri = self._redact(item.uri)
        # Sample ids must not move when the secret key changes: hash the path with a fixed
        # tag in place of identifiers, plus the file's bytes where a path was redacted.
        id_uri = self._redact(item.uri, tag="[redacted]")
        id_parts = (id_uri,) if id_uri == item.uri else (id_uri, original_sha)
        split = SPLITS.get((item.split or "").lower()) or _split(settings, self.card.id, group)

        images, annotations, blobs = [], [], []
        blank, n, flat = 0, 0, None
        for frame in frames:
            n += 1
            try:
                enc = normalise(frame, self.card.image)
            except ReadError as exc:
                # A blank slice at the edge of a volume (air, zero padding) is not an image,
                # but it must not cost the volume its other slices.
                if exc.reason != "empty_image":
                    raise
                blank, flat = blank + 1, exc
                continue
            tile = frame.tile or ()  # a slide tile is named by its level and offset, so id parts grow only for tiles
            sample_id = f"{self.card.id}-{short_hash(self.card.id, *id_parts, frame.index, *tile)}"
            modality = canonical_modality(item.modality or frame.meta.get("Modality") or self.card.modality)
            anatomy = canonical_anatomy(item.anatomy or _body_part(frame.meta) or self.card.anatomy)
            images.append(
                {
                    "sample_id": sample_id,
                    "source_id": self.card.id,
                    "original_uri": uri,
                    "original_sha256": original_sha,
                    "original_format": source_format,
                    "frame_index": frame.index,
                    "frame_time_s": frame.time_s,
                    "tile_level": frame.tile[0] if frame.tile else None,
                    "tile_x": frame.tile[1] if frame.tile else None,
                    "tile_y": frame.tile[2] if frame.tile else None,
                    "plane": frame.plane,
                    "image_sha256": enc.sha256,
                    "phash": enc.phash,
                    "image_format": enc.format,
                    "image_bytes": len(enc.data),
                    "width": enc.width,
                    "height": enc.height,
                    "bit_depth": enc.bit_depth,
                    "channels": enc.channels,
                    "modality": modality,
                    "anatomy": anatomy,
                    "department": self.card.department,
                    "patient_key": patient_key,
                    "study_key": study_key,
                    "split": split,
                    "adapter": self.name,
                    "adapter_version": self.version,
                    "transform": transform_row(enc.transform),
                    "series_key": series_key,
                    "slice_position": _slice_position(item, frame, multi),
                }
            )
            blobs.append(enc)
            domain = (modality, anatomy)
            h, w = frame.pixels.shape[:2]
            boxes = _scaled_boxes((item.frame_boxes or {}).get(frame.index, []), enc.width / w, enc.height / h)
            annotations += self._item_annotations(item, sample_id, frame.index, domain, boxes)
        if not images and n == 1 and flat is not None:
            raise flat
        if not images:
            raise ReadError("empty_image", f"all {n} frames are blank after normalisation")
        if blank:
            self._blank_frames += blank
            log.debug("%s: skipped %d blank frame(s) of %d", uri, blank, n)
        self._skipped.update(getattr(stream, "skipped", {}))
        for part in getattr(stream, "part_rejects", []):
            log.warning("%s: %s (%s); its other %d image(s) are indexed", uri, part.message, part.reason, len(images))
            self._parts.append(self._reject(item.uri, part.reason, part.message))
        if self.rows_repeat:
            frames_of = [(r["sample_id"], r["frame_index"], (r["modality"], r["anatomy"])) for r in images]
            self._samples[item.uri] = (frames_of, {a["annotation_id"] for a in annotations})
        return Indexed(item, images, annotations, blobs)

    def _embedded_bytes(self, item: Item) -> bytes:
        from curator.adapters.parquet import EmbeddedImages

        if getattr(self, "_embedded", None) is None:
            self._embedded = EmbeddedImages()
        column, row = item.member
        return self._embedded.read(item.path, column, row)

    def _more_annotations(self, item: Item, samples: list[tuple], seen: set[str]) -> Indexed:
        """A later row naming an image already indexed: its new annotations join the existing sample(s)."""
        annotations = []
        for sample_id, index, domain in samples:
            for row in self._item_annotations(item, sample_id, index, domain):
                if row["annotation_id"] not in seen:
                    seen.add(row["annotation_id"])
                    annotations.append(row)
        return Indexed(item, [], annotations, [])

    def _item_annotations(
        self, item: Item, sample_id: str, index: int | None, domain: tuple, boxes: dict | None = None
    ) -> list[dict]:
        labels = list(item.labels)
        if item.frame_labels is not None:
            labels += item.frame_labels.get(index, [])
        rows = [self._label_row(sample_id, label, domain, (boxes or {}).get(label.native)) for label in labels]
        for text in item.texts:
            rows.append(self._annotation(sample_id, text.kind, text.text, None, None, text.language, text.payload))
        return rows

    def _label_row(self, sample_id: str, label: Label, domain: tuple, boxes: list | None = None) -> dict:
        """A label in the shared vocabulary; a mask- or box-table-derived label carries its boxes (``schema.BOX``)."""
        payload: dict = {"vocabulary": VOCABULARY_VERSION}
        if label.normal:
            payload["state"] = "normal"
        native = label.native
        text = NORMAL if label.normal else canonical_label(native, *domain)
        return self._annotation(sample_id, "label", text, label.value, native, None, payload, boxes)

    def _annotation(self, sample_id, kind, text, value, native, language, payload, boxes=None) -> dict:
        typed = [dict(zip(("x0", "y0", "x1", "y1"), map(float, b), strict=True)) for b in boxes] if boxes else None
        return {
            "annotation_id": short_hash(
                sample_id, kind, text, value, native, language, json.dumps(payload, sort_keys=True), json.dumps(typed)
            ),
            "sample_id": sample_id,
            "source_id": self.card.id,
            "kind": kind,
            "text": text,
            "value": value,
            "native": native,
            "language": language,
            "payload": json.dumps(payload, sort_keys=True, ensure_ascii=False),
            "boxes": typed,
        }


def _scaled_boxes(boxes: list[Box], sx: float, sy: float) -> dict[str, list[list[float]]]:
    """Boxes from reader-frame pixels to output-image pixels, grouped by native label."""
    out: dict[str, list[list[float]]] = {}
    for b in boxes:
        x0, y0, x1, y1 = b.box
        out.setdefault(b.label.native, []).append(
            [round(x0 * sx, 2), round(y0 * sy, 2), round(x1 * sx, 2), round(y1 * sy, 2)]
        )
    return out


def _keyed(key: bytes, source_id: str, kind: str, value) -> str | None:
    if value in (None, ""):
        return None
    return hmac.new(key, f"{source_id}\x00{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()[:24]


def _split(settings: IngestSettings, source_id: str, group: str) -> str:
    u = int(short_hash(settings.seed, source_id, group, n=12), 16) / float(16**12)
    if u < settings.split.test:
        return "test"
    if u < settings.split.test + settings.split.val:
        return "val"
    return "train"


def _slice_position(item: Item, frame, multi: bool) -> float | None:
    """mm along the stacking axis: the layout's (DICOM header), else a volume slice's index x voxel size."""
    if not multi or item.slice_position is not None:
        return item.slice_position
    voxel = (frame.transform or {}).get("voxel_mm")
    axis = {"sagittal": 0, "coronal": 1, "axial": 2}.get(frame.plane or "")
    if voxel and axis is not None and frame.index is not None:
        return round(float(frame.index) * float(voxel[axis]), 4)
    return None


def _find_root(given: Path, top_folders: list[str]) -> Path:
    for name in top_folders:
        candidate = (given / name).resolve()
        if candidate.is_dir() and candidate.is_relative_to(given):
            return candidate
    return given


def _body_part(meta: dict) -> str | None:
    part = meta.get("BodyPartExamined")
    return str(part).replace("_", " ") if part else None
