"""trace: the full lineage of one sample, from the tables alone.

Accepts a sample id, the id of any member merged into a sample (the id ingest
gave one source's copy), or ``SHARD_URL#KEY`` as a loader reports it. Every
lookup is a DuckDB query filtered on that one sample, so tracing costs the same
in a corpus of a thousand or of millions of images.
"""

from __future__ import annotations

import json

from curator.blobs import blob_ext, blob_path, locate
from curator.errors import CuratorError
from curator.layout import REPEAT_KEY, sample_id_of
from curator.llm.offline import Triplet
from curator.schema import TEXT_KINDS, transform_dict
from curator.storage import Corpus
from curator.tables import connect, rows

CARD_FIELDS = ("source_id", "name", "version", "license", "access", "citation", "homepage", "adapter", "card_sha256")


def resolve(con, key: str) -> str | None:
    """The sample a sample id or member id belongs to."""
    hit = con.execute(
        "SELECT sample_id FROM members WHERE member_id = ? OR sample_id = ? ORDER BY sample_id LIMIT 1", [key, key]
    ).fetchall()
    return hit[0][0] if hit else None


def trace(corpus: Corpus, ident: str) -> dict:
    shard_url, _, key = ident.rpartition("#") if "#" in ident else ("", "", ident)
    con = connect(corpus)
    if not corpus.table_parts("images"):
        raise CuratorError(f"{corpus.url} has no index: run `curator build` first")
    sample_id = resolve(con, key)
    if sample_id is None and sample_id_of(key) != key:
        # a repeat key <sample_id>-rN names its sample, if the shard stage wrote that key
        if con.execute("SELECT 1 FROM shards WHERE key = ? LIMIT 1", [key]).fetchall():
            sample_id = resolve(con, sample_id_of(key))
    if sample_id is None:
        raise CuratorError(f"sample '{key}' is not in {corpus.url}")
    sample = rows(con, "SELECT * FROM samples WHERE sample_id = ?", [sample_id])[0]
    provenance = []
    for r in rows(
        con,
        f"""
        SELECT i.*, {", ".join(f"src.{c} AS src_{c}" for c in CARD_FIELDS)}
        FROM members mb JOIN images i ON i.sample_id = mb.member_id JOIN sources src ON src.source_id = i.source_id
        WHERE mb.sample_id = ? ORDER BY mb.member_id
        """,
        [sample_id],
    ):
        source = {c: r.pop(f"src_{c}") for c in CARD_FIELDS}
        r["transform"] = transform_dict(r["transform"])
        provenance.append({"member_id": r["sample_id"], "source": source, "image": r})
    annotations = rows(
        con,
        "SELECT a.* FROM members mb JOIN annotations a ON a.sample_id = mb.member_id "
        "WHERE mb.sample_id = ? ORDER BY a.source_id, a.annotation_id",
        [sample_id],
    )
    for a in annotations:
        a["payload"] = json.loads(a["payload"])
    triplet = _triplet(sample, annotations)
    captions = (
        rows(con, "SELECT * FROM captions WHERE triplet_id = ? ORDER BY language, caption_index", [triplet.id])
        if triplet
        else []
    )
    # one row per placement: the main set, each named mixture, each up-sampled repeat
    shards = rows(
        con, "SELECT * FROM shards WHERE sample_id = ? ORDER BY mixture NULLS FIRST, shard_url, key", [sample_id]
    )
    if shard_url:
        if not shards:
            raise CuratorError(f"sample '{sample_id}' is in no shard, not {shard_url}")
        in_shard = [s for s in shards if _same_shard(shard_url, s["shard_url"])]
        if not in_shard:
            raise CuratorError(f"sample '{sample_id}' is in {shards[0]['shard_url']}, not {shard_url}")
        matching = [s for s in in_shard if (s["key"] or s["sample_id"]) == key]
        if not matching:
            keys = ", ".join(sorted(s["key"] or s["sample_id"] for s in in_shard))
            raise CuratorError(f"{shard_url} holds no key '{key}' (its keys of this sample: {keys})")
        shards = matching + [s for s in shards if s not in matching]
    member_ids = [p["member_id"] for p in provenance]
    duplicates = rows(
        con,
        "SELECT * FROM duplicates WHERE sample_id = ? OR other_id IN (SELECT unnest(?::VARCHAR[])) "
        "ORDER BY kind, sample_id, other_id",
        [sample_id, member_ids],
    )
    leakage = rows(con, "SELECT * FROM leakage WHERE sample_id = ? ORDER BY benchmark, benchmark_item", [sample_id])
    blob = _blob(con, sample["image_sha256"], provenance[0]["image"]["image_format"])
    return {
        "sample_id": sample_id,
        "requested": key,
        "sample": sample,
        # the canonical member's card and image, for readers that want one answer
        "source": provenance[0]["source"],
        "image": provenance[0]["image"],
        "provenance": provenance,
        "annotations": annotations,
        "triplet": None
        if triplet is None
        else {
            "triplet_id": triplet.id,
            "label": triplet.label,
            "anatomy": triplet.anatomy,
            "modality": triplet.modality,
        },
        "captions": captions,
        "shard": shards[0] if shards else None,
        "placements": shards,
        "duplicates": duplicates,
        "leakage": leakage,
        "blob": blob,
    }


def _same_shard(asked: str, url: str) -> bool:
    """Does a shard URL as a loader reports it (absolute, or relative to its shard folder) name ``url``?"""
    asked = asked.rstrip("/")
    if asked == url or asked.endswith("/" + url):
        return True
    # relative to the folder of its manifest/wids index: shards/ or shards/mixtures/<name>/
    root = url.rpartition("/")[0].rpartition("/")[0]
    return bool(root) and asked == url.removeprefix(root + "/")


def placement(row: dict) -> str:
    """Where a shard row puts its sample: ``main`` or ``mixture NAME``, and ``repeat N`` for an up-sampled copy."""
    where = f"mixture {row['mixture']}" if row.get("mixture") else "main"
    m = REPEAT_KEY.match(row.get("key") or "")
    if m and m["sample_id"] == row["sample_id"]:
        where += f", repeat {int(m['repeat'])}"
    return where


def _triplet(sample: dict, annotations: list[dict]) -> Triplet | None:
    """The sample's caption triplet, by the rule of curator.stages.caption.sample_triplets."""
    if sample["status"] != "keep" or any(a["kind"] in TEXT_KINDS for a in annotations):
        return None
    positives = sorted({a["text"] for a in annotations if a["kind"] == "label" and a["value"] == "positive"})
    return Triplet(", ".join(positives) or None, sample["anatomy"] or "unspecified", sample["modality"] or "mixed")


def _clock(seconds: float) -> str:
    """A video time as h:mm:ss.sss (and the plain seconds), so an auditor can seek to it."""
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{seconds - whole // 60 * 60:06.3f} ({seconds:.3f} s)"


def _blob(con, sha256: str, image_format: str | None) -> dict:
    """Where the sample's encoded bytes are: a range of a pack, or the loose file of an older corpus."""
    where = locate(con, [sha256]).get(sha256)
    if where is None:
        return {"pack": None, "offset": None, "length": None, "path": blob_path(sha256, blob_ext(image_format))}
    pack, offset, length = where
    return {"pack": pack, "offset": offset, "length": length, "path": None}


def _format_blob(b: dict) -> str:
    if b["pack"] is None:
        return f"{b['path']} (loose)"
    return f"{b['pack']}  bytes {b['offset']}..{b['offset'] + b['length'] - 1} ({b['length']:,} bytes)"


def format_trace(t: dict) -> str:
    s = t["sample"]
    lines = [f"sample      {t['sample_id']}"]
    if t["requested"] != t["sample_id"]:
        lines.append(f"  (asked for {t['requested']}, merged into this sample)")
    lines += [
        f"status      {s['status']}"
        + (f"  duplicate of {s['duplicate_of']}" if s["duplicate_of"] else "")
        + f"  split={s['split']} ({s['split_rule']})",
        f"metadata    modality={s['modality']} anatomy={s['anatomy']} department={s['department']}",
        f"image       sha256 {s['image_sha256']}  dhash {s['phash']}",
        f"blob        {_format_blob(t['blob'])}",
        f"provenance  {len(t['provenance'])} member(s) from {', '.join(s['source_ids'])}",
    ]
    shown: set[str] = set()
    for p in t["provenance"]:
        src, img = p["source"], p["image"]
        if src["source_id"] not in shown:  # a source's card once, then each of its members
            shown.add(src["source_id"])
            lines += [
                f"  source    {src['source_id']}  {src['name']} (version {src['version']})",
                f"  licence   {src['license']}  access: {src['access']}",
                f"  homepage  {src['homepage'] or '-'}",
                f"  citation  {src['citation']}",
            ]
        lines += [
            f"  - member    {p['member_id']}",
            f"    original  {img['original_uri']}"
            + (f"  frame {img['frame_index']}" if img["frame_index"] is not None else "")
            + (f"  at {_clock(img['frame_time_s'])}" if img.get("frame_time_s") is not None else "")
            + (
                f"  tile level {img['tile_level']} at x={img['tile_x']} y={img['tile_y']}"
                if img.get("tile_level") is not None
                else ""
            )
            + (f"  plane {img['plane']}" if img["plane"] else ""),
            f"      sha256  {img['original_sha256']}  ({img['original_format']})",
            f"    adapter   {img['adapter']} v{img['adapter_version']}",
            f"    image     {img['width']}x{img['height']} {img['bit_depth']}-bit {img['image_format']}  "
            f"split from source: {img['split']}",
            f"    transform {json.dumps(img['transform'], sort_keys=True)}",
        ]
    lines.append(f"annotations {len(t['annotations'])}")
    for a in t["annotations"]:
        detail = a["value"] if a["kind"] == "label" else a["language"]
        native = f" (native: {a['native']})" if a["native"] and a["native"] != a["text"] else ""
        lines.append(f"  - {a['kind']}: {a['text']} [{detail}]{native}  <{a['source_id']}>")
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
        sh = t["shard"]
        lines.append(
            f"shard       {sh['shard_url']}  key {sh.get('key') or sh['sample_id']} ({placement(sh)})"
            f"  members {', '.join(sh['members'])}"
        )
        lines.append(f"  sha256    {sh['shard_sha256']}")
        for other in t["placements"][1:]:
            lines.append(
                f"  also      {other['shard_url']}  key {other.get('key') or sh['sample_id']} ({placement(other)})"
            )
    else:
        lines.append(f"shard       none ({'not sharded yet' if s['status'] == 'keep' else 'left out: ' + s['status']})")
    for d in t["duplicates"]:
        lines.append(
            f"duplicate   {d['kind']}: {d['other_id']} ({d['other_source_id']}) of {d['sample_id']} "
            f"distance {d['distance']}, {d['action']}"
        )
    for lk in t["leakage"]:
        lines.append(
            f"hold-out    {lk['benchmark']}/{lk['benchmark_item']} by {lk['match']} "
            f"(distance {lk['distance']}), {lk['action']}"
        )
    return "\n".join(lines)
