"""The index tables: one pyarrow schema per table, the single definition every stage uses.

A corpus directory holds ``index/<table>/part-*.parquet`` for each table below.
Column meanings are documented in README.md ("The index").
"""

from __future__ import annotations

import pyarrow as pa

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
        ("transform", pa.string()),
        # Nullable. The series or volume the image is a slice of (keyed hash of the DICOM
        # SeriesInstanceUID, or "file:<sha>" for a volume's slices): never near-duplicates of each other.
        ("series_key", pa.string()),
        # Nullable. DICOM: the slice's position along the series' normal in mm (ImagePositionPatient).
        ("slice_position", pa.float64()),
    ]
)

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
        ("payload", pa.string()),
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
