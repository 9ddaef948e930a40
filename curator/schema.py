"""The index tables: one pyarrow schema per table, the single definition every stage uses.

A corpus directory holds ``index/<table>/part-*.parquet`` for each table below.
Column meanings are documented in README.md ("The index").
"""

from __future__ import annotations

import json

import pyarrow as pa

# images.transform: what normalisation did to one image, as a struct (DuckDB and polars
# read it with no hand-written dtype: ``transform.window.centre``, ``transform.resize.to_size``).
# Each step a reader or the imaging policy records has a fixed shape; a step outside this
# list lands in ``other`` as JSON (free-form by definition). Field names are SQL-friendly
# (``origin`` for the readers' ``from``, ``from_size``/``to_size`` for a resize's ``from``/``to``);
# :func:`transform_dict` gives back the readers' dict, which shard ``.json`` and trace show.
_F64, _STR = pa.float64(), pa.string()
TRANSFORM = pa.struct(
    [
        # centre/width (card, header) or low/high (a percentile window); function: the header's VOI LUT function
        ("window", pa.struct([("centre", _F64), ("width", _F64), ("low", _F64), ("high", _F64),
                              ("function", _STR), ("origin", _STR)])),
        # slope/intercept, or origin "Modality LUT Sequence" for a lookup table
        ("modality_lut", pa.struct([("slope", _F64), ("intercept", _F64), ("origin", _STR)])),
        ("inverted", _STR),  # "MONOCHROME1"
        ("padding", _STR),  # Pixel Padding Value handling
        ("depth", _STR),  # 16-bit input quantised to 8-bit
        ("source_mode", _STR),  # a raster's PIL mode conversion
        ("orientation", _STR),  # NIfTI: canonical orientation and display convention
        ("voxel_mm", pa.list_(_F64)),
        ("aspect", pa.struct([("pixel_spacing_mm", pa.list_(_F64))])),
        ("resize", pa.struct([("from_size", pa.list_(pa.int32())), ("to_size", pa.list_(pa.int32())),
                              ("filter", _STR)])),  # sizes are [width, height]
        ("encode", pa.struct([("format", _STR), ("bit_depth", pa.int8()), ("quality", pa.int16())])),
        ("video", pa.struct([("fps", _F64), ("every_s", _F64)])),
        ("cine", pa.struct([("fps", _F64), ("every_s", _F64)])),
        ("slide", pa.struct([("level", pa.int16()), ("downsample", _F64), ("level0_xy", pa.list_(pa.int64())),
                             ("magnification", _F64), ("level_magnification", _F64)])),
        ("other", _STR),  # JSON object of any step not above, or null
    ]
)  # fmt: skip
# struct field -> the readers' key, where they differ
_RENAMED = {"origin": "from", "from_size": "from", "to_size": "to"}
_KEYS = {f.name: {g.name for g in f.type} if pa.types.is_struct(f.type) else None for f in TRANSFORM}


def transform_row(transform: dict) -> dict:
    """A reader's transform dict as a value of :data:`TRANSFORM` (a step of another shape goes to ``other``)."""
    row: dict = {}
    other: dict = {}
    for key, value in transform.items():
        fields = _KEYS.get(key, "unknown")
        if key == "modality_lut" and isinstance(value, str):
            value = {"from": value}
        if fields is None and key != "other" and not isinstance(value, dict):
            row[key] = value
            continue
        if isinstance(fields, set) and isinstance(value, dict):
            renamed = {next((f for f in fields if _RENAMED.get(f) == k), k): v for k, v in value.items()}
            if set(renamed) <= fields:
                row[key] = renamed
                continue
        other[key] = value
    if other:
        row["other"] = json.dumps(other, sort_keys=True, ensure_ascii=False)
    return row


def transform_dict(value: dict | None) -> dict:
    """Back from a :data:`TRANSFORM` value (as DuckDB or pyarrow return it) to the readers' dict."""
    out: dict = {}
    for key, item in (value or {}).items():
        if item is None:
            continue
        if key == "other":
            out.update(json.loads(item))
        elif isinstance(item, dict):
            step = {_RENAMED.get(k, k): v for k, v in item.items() if v is not None}
            out[key] = step["from"] if key == "modality_lut" and set(step) == {"from"} else step
        else:
            out[key] = item
    return dict(sorted(out.items()))


SOURCES = pa.schema(
    [
        ("source_id", pa.string()),
        ("name", pa.string()),
        ("version", pa.string()),
        ("homepage", pa.string()),
        ("license", pa.string()),
        ("access", pa.string()),
        ("citation", pa.string()),
        ("modality", pa.string()),
        ("anatomy", pa.string()),
        ("department", pa.string()),
        ("languages", pa.list_(pa.string())),
        ("adapter", pa.string()),
        ("card_sha256", pa.string()),
    ]
)

IMAGES = pa.schema(
    [
        ("sample_id", pa.string()),
        ("source_id", pa.string()),
        ("original_uri", pa.string()),
        ("original_sha256", pa.string()),
        ("original_format", pa.string()),
        ("frame_index", pa.int32()),
        # a video or cine frame's presentation time in seconds from the start (null otherwise)
        ("frame_time_s", pa.float64()),
        # a whole-slide tile: pyramid level (0 = full resolution) and offset in that level's pixels
        ("tile_level", pa.int16()),
        ("tile_x", pa.int32()),
        ("tile_y", pa.int32()),
        ("plane", pa.string()),
        ("image_sha256", pa.string()),
        ("phash", pa.string()),
        ("image_format", pa.string()),
        ("image_bytes", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("bit_depth", pa.int8()),
        ("channels", pa.int8()),
        ("modality", pa.string()),
        ("anatomy", pa.string()),
        ("department", pa.string()),
        ("patient_key", pa.string()),
        ("study_key", pa.string()),
        ("split", pa.string()),
        ("adapter", pa.string()),
        ("adapter_version", pa.string()),
        ("transform", TRANSFORM),
        # Nullable. The series or volume the image is a slice of (keyed hash of the DICOM
        # SeriesInstanceUID, or "file:<sha>" for a volume's slices): never near-duplicates of each other.
        ("series_key", pa.string()),
        # Nullable. DICOM: the slice's position along the series' normal in mm (ImagePositionPatient).
        ("slice_position", pa.float64()),
    ]
)

# A label's regions (mask components, box tables): output image pixels, [x0, y0, x1, y1), x right, y down.
BOX = pa.struct([("x0", pa.float64()), ("y0", pa.float64()), ("x1", pa.float64()), ("y1", pa.float64())])

ANNOTATIONS = pa.schema(
    [
        ("annotation_id", pa.string()),
        ("sample_id", pa.string()),
        ("source_id", pa.string()),
        ("kind", pa.string()),
        ("text", pa.string()),
        ("value", pa.string()),
        ("native", pa.string()),
        ("language", pa.string()),
        ("payload", pa.string()),  # JSON, free-form: a report's section, a VQA answer, a label's state
        ("boxes", pa.list_(BOX)),  # typed: a label's regions (null when it has none)
    ]
)

CAPTIONS = pa.schema(
    [
        ("triplet_id", pa.string()),
        ("label", pa.string()),
        ("anatomy", pa.string()),
        ("modality", pa.string()),
        ("language", pa.string()),
        ("caption_index", pa.int16()),
        ("caption", pa.string()),
        ("generator", pa.string()),
        ("model", pa.string()),
        ("prompt_id", pa.string()),
        ("prompt_sha256", pa.string()),
        ("validation", pa.string()),
    ]
)

# Which captions a sample may carry: its triplet's validated captions, one row per
# (sample, caption), written by the caption stage so SQL joins samples to captions
# without the triplet rule in Python.
SAMPLE_CAPTIONS = pa.schema(
    [
        ("sample_id", pa.string()),
        ("triplet_id", pa.string()),
        ("language", pa.string()),
        ("caption_index", pa.int16()),
    ]
)

REJECTS = pa.schema(
    [
        ("source_id", pa.string()),
        ("original_uri", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("message", pa.string()),
    ]
)

SHARDS = pa.schema(
    [
        ("sample_id", pa.string()),
        ("split", pa.string()),
        ("shard_url", pa.string()),
        ("members", pa.list_(pa.string())),
        ("bytes", pa.int64()),
        ("shard_sha256", pa.string()),
        # The WebDataset key: the sample_id, or <sample_id>-r<N> for the Nth up-sampled repeat.
        ("key", pa.string()),
        # Named mixture (shards/mixtures/<name>/), null for the main set in shards/.
        ("mixture", pa.string()),
    ]
)

# Written by the index step (curator.stages.index) after ingest. A *sample* is one
# distinct image (by image_sha256): every images row is a *member* of exactly one
# sample; the sample's id is its smallest member id, so an image seen once keeps the
# id ingest gave it. Shards, captions and trace work on samples.
SAMPLES = pa.schema(
    [
        ("sample_id", pa.string()),
        ("image_sha256", pa.string()),
        ("phash", pa.string()),
        ("n_members", pa.int32()),
        ("source_ids", pa.list_(pa.string())),
        ("modality", pa.string()),
        ("anatomy", pa.string()),
        ("department", pa.string()),
        ("split", pa.string()),
        ("split_rule", pa.string()),  # members | strictest: see curator.stages.index
        ("status", pa.string()),  # keep | near_duplicate | held_out
        ("duplicate_of", pa.string()),  # near_duplicate: the sample kept in its cluster
    ]
)

MEMBERS = pa.schema(
    [
        ("sample_id", pa.string()),
        ("member_id", pa.string()),  # images.sample_id
        ("source_id", pa.string()),
        ("canonical", pa.bool_()),
    ]
)

DUPLICATES = pa.schema(
    [
        ("kind", pa.string()),  # exact_same_source | exact_cross_source | near
        ("sample_id", pa.string()),  # the sample kept (exact: the merged sample; near: the cluster's keeper)
        ("other_id", pa.string()),  # exact: the merged member; near: the other sample
        ("source_id", pa.string()),
        ("other_source_id", pa.string()),
        ("distance", pa.int16()),  # dHash Hamming distance (0 for exact)
        ("action", pa.string()),  # merged | dropped | flagged
    ]
)

LEAKAGE = pa.schema(
    [
        ("sample_id", pa.string()),
        ("benchmark", pa.string()),  # the hash list's or folder's name
        ("benchmark_item", pa.string()),  # the file in the folder, or the name on the hash list's line
        ("match", pa.string()),  # original_sha256 | image_sha256 | phash
        ("distance", pa.int16()),
        ("action", pa.string()),  # excluded | flagged
    ]
)

# Written by the instruct stage (curator.stages.instruct): one training entry, i.e. one task
# of one sample. ``turns`` are (human, gpt) messages in LLaVA's roles, without the image
# placeholder (an export adds "<image>" to the first human turn). ``origin`` (JSON) names
# the annotations or caption the entry was made from.
TURN = pa.struct([("from", pa.string()), ("value", pa.string())])
INSTRUCTIONS = pa.schema(
    [
        ("entry_id", pa.string()),
        ("sample_id", pa.string()),
        ("entry_index", pa.int32()),  # position among the sample's entries (image-centric order)
        ("source_id", pa.string()),  # the source whose annotation it uses (metadata tasks: the canonical member's)
        ("split", pa.string()),
        ("task", pa.string()),  # caption | report | classification | vqa | grounding | region | recognition
        ("form", pa.string()),  # e.g. report: findings | impression | full; classification: single | multi | yesno
        ("family", pa.string()),  # caption | instruction | report | grounding: what mixtures weight
        ("language", pa.string()),
        ("turns", pa.list_(TURN)),
        ("generator", pa.string()),  # template | source | llm
        ("model", pa.string()),
        ("prompt_id", pa.string()),
        ("prompt_sha256", pa.string()),
        ("validation", pa.string()),
        ("origin", pa.string()),
        ("translated", pa.bool_()),  # an LLM translation of an English entry (origin names it)
    ]
)

# Written by `curator audit` (curator.audit.scores): the LLM's score of one sampled text
# against its sample's metadata, on the rubric in prompts/audit/<v>.toml.
AUDIT_SCORES = pa.schema(
    [
        ("text_id", pa.string()),  # entry_id (instructions) or annotation / caption key
        ("sample_id", pa.string()),
        ("source_id", pa.string()),
        ("kind", pa.string()),  # the entry's task, or caption / report
        ("language", pa.string()),
        ("text", pa.string()),
        ("labels", pa.string()),
        ("modality", pa.string()),
        ("anatomy", pa.string()),
        ("score", pa.int8()),  # null when no valid score came back (status says why)
        ("reason", pa.string()),
        ("status", pa.string()),  # ok | a reply problem | request_failed:...
        ("model", pa.string()),
        ("prompt_id", pa.string()),
        ("prompt_sha256", pa.string()),
        ("seed", pa.int64()),
    ]
)

# Where each image's encoded bytes are: ``pack[offset : offset + length]``, one part per
# ingest unit beside its images part (curator.blobs explains the packed layout).
BLOB_PACKS = pa.schema(
    [
        ("image_sha256", pa.string()),
        ("ext", pa.string()),
        ("pack", pa.string()),
        ("offset", pa.int64()),
        ("length", pa.int64()),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "sources": SOURCES,
    "images": IMAGES,
    "annotations": ANNOTATIONS,
    "captions": CAPTIONS,
    "sample_captions": SAMPLE_CAPTIONS,
    "rejects": REJECTS,
    "shards": SHARDS,
    "samples": SAMPLES,
    "members": MEMBERS,
    "duplicates": DUPLICATES,
    "leakage": LEAKAGE,
    "instructions": INSTRUCTIONS,
    "blob_packs": BLOB_PACKS,
    "audit_scores": AUDIT_SCORES,
}

# Annotation kinds that describe an image in words: a sample with one is not "label-only".
TEXT_KINDS = ("caption", "report")

# Reject reason codes. Adapters and readers use these names so counts group cleanly.
REASONS = {
    "unsupported_format": "file type no reader handles",
    "not_dicom": "file has a .dcm name or sits in a DICOM folder but has no DICOM preamble",
    "corrupt": "file is damaged or cannot be decoded",
    "truncated": "file ends before its data does",
    "undecodable_syntax": "DICOM transfer syntax has no installed decoder",
    "no_pixels": "file holds no image data (e.g. a structured report)",
    "missing_file": "a table row names a file that does not exist",
    "path_escape": "a table row names a path outside the source root",
    "bad_row": "a table row lacks a required field",
    "bad_layout": "a file sits where the layout expects none (e.g. above the class folders)",
    "decompression_bomb": "image dimensions exceed the safety limit",
    "too_many_frames": "a file declares more frames or slices than the card's image.max_frames",
    "text_too_long": "a caption, report or answer is longer than the card's image.max_text_chars",
    "empty_image": "image has no variation after normalisation",
    "burned_in_annotation": "DICOM BurnedInAnnotation is YES and the card does not allow it (PHI may be in the pixels)",
    "unknown_label": "a row or folder names a label outside the card's known_labels",
    "missing_report": "an image whose study has no report file (image_report with require_report)",
    "mask_mismatch": "a segmentation mask's shape differs from its image's",
    "too_long": "a video's declared duration exceeds the card's max_video_seconds",
    "missing_level": "the card's slide level or magnification is not in this slide's pyramid",
    # parts of files whose other images were indexed (one rejects row per part)
    "tile_corrupt": "a whole-slide image tile cannot be decoded; the slide's other tiles are indexed",
    "frames_lost": "a video's frames after damage or truncation cannot be decoded; the frames before are indexed",
}
