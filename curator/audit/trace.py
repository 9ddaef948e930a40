"""trace: the full lineage of one sample, from the tables alone."""

from __future__ import annotations

import json

import pyarrow.compute as pc

from curator.errors import CuratorError
from curator.stages.caption import sample_triplets
from curator.storage import Corpus


def _rows(corpus: Corpus, table: str, column: str, value: str, required: bool = True) -> list[dict]:
    t = corpus.read_table(table, required=required)
    return t.filter(pc.equal(t[column], value)).to_pylist() if t.num_rows else []


def trace(corpus: Corpus, sample_id: str) -> dict:
    if "#" in sample_id:  # SHARD_URL#KEY
        sample_id = sample_id.rsplit("#", 1)[1]
    images = _rows(corpus, "images", "sample_id", sample_id)
    if not images:
        raise CuratorError(f"sample '{sample_id}' is not in {corpus.url}")
    image = images[0]
    image["transform"] = json.loads(image["transform"])
    source = _rows(corpus, "sources", "source_id", image["source_id"])[0]
    annotations = _rows(corpus, "annotations", "sample_id", sample_id)
    for a in annotations:
        a["payload"] = json.loads(a["payload"])
    triplet = sample_triplets(corpus).get(sample_id)
    captions = _rows(corpus, "captions", "triplet_id", triplet.id, required=False) if triplet else []
    shards = _rows(corpus, "shards", "sample_id", sample_id, required=False)
    return {
        "sample_id": sample_id,
        "source": source,
        "image": image,
        "annotations": sorted(annotations, key=lambda a: a["annotation_id"]),
        "triplet": None
        if triplet is None
        else {
            "triplet_id": triplet.id,
            "label": triplet.label,
            "anatomy": triplet.anatomy,
            "modality": triplet.modality,
        },
        "captions": sorted(captions, key=lambda c: (c["language"], c["caption_index"])),
        "shard": shards[0] if shards else None,
    }


def format_trace(t: dict) -> str:
    src, img = t["source"], t["image"]
    lines = [
        f"sample      {t['sample_id']}",
        f"source      {src['source_id']}  {src['name']} (version {src['version']})",
        f"licence     {src['license']}  access: {src['access']}",
        f"homepage    {src['homepage'] or '-'}",
        f"citation    {src['citation']}",
        f"original    {img['original_uri']}"
        + (f"  frame {img['frame_index']}" if img["frame_index"] is not None else "")
        + (f"  plane {img['plane']}" if img["plane"] else ""),
        f"  sha256    {img['original_sha256']}  ({img['original_format']})",
        f"adapter     {img['adapter']} v{img['adapter_version']}",
        f"image       {img['width']}x{img['height']} {img['bit_depth']}-bit {img['image_format']}  "
        f"sha256 {img['image_sha256']}",
        f"transform   {json.dumps(img['transform'], sort_keys=True)}",
        f"metadata    modality={img['modality']} anatomy={img['anatomy']} department={img['department']} "
        f"split={img['split']}",
        f"annotations {len(t['annotations'])}",
    ]
    for a in t["annotations"]:
        detail = a["value"] if a["kind"] == "label" else a["language"]
        native = f" (native: {a['native']})" if a["native"] and a["native"] != a["text"] else ""
        lines.append(f"  - {a['kind']}: {a['text']} [{detail}]{native}")
    if t["triplet"]:
        tr = t["triplet"]
        lines.append(
            f"triplet     {tr['triplet_id']}  label={tr['label']} anatomy={tr['anatomy']} modality={tr['modality']}"
        )
    lines.append(f"captions    {len(t['captions'])}")
    for c in t["captions"]:
        lines.append(
            f"  - [{c['language']}] {c['caption']}  ({c['generator']}, {c['model']}, {c['prompt_id']} "
            f"sha256 {c['prompt_sha256'][:12]}, {c['validation']})"
        )
    if t["shard"]:
        s = t["shard"]
        lines.append(f"shard       {s['shard_url']}  members {', '.join(s['members'])}")
        lines.append(f"  sha256    {s['shard_sha256']}")
    else:
        lines.append("shard       not sharded yet")
    return "\n".join(lines)
