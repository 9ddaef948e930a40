"""The corpus card's figures a data team reads first, each a :class:`Section` from DuckDB aggregates.

Build provenance (``shards/build.json``), thumbnails per source (from the blobs),
source x split and modality x split, label balance per source, image sizes and
bit depths, caption provenance and validation, and mixture shares after weights.
:mod:`curator.audit.report` puts them in order with its other sections and
renders HTML and Markdown.
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from curator.audit import charts
from curator.blobs import blob_ext, read_blobs, refs
from curator.storage import Corpus
from curator.tables import rows

KEPT = "s.status = 'keep'"
BUILD_FILE = "shards/build.json"  # curator.provenance.BUILD_FILE (audit reads what stages wrote, imports none)
THUMBS_PER_SOURCE = 4
THUMB_PX = 128  # longest side of a thumbnail: ~3-6 KB each as JPEG
SPLIT_ORDER = ("train", "val", "test")


@dataclass
class Section:
    """One heading of the card: a table, its note, and charts (``chart`` names the generic bar chart of the table)."""

    title: str
    chart: str | None
    table: list[dict]
    note: str = ""
    svgs: list[tuple[str, str]] = field(default_factory=list)  # (file stem, SVG) drawn by the section itself
    html: str = ""  # extra HTML after the charts (the thumbnail grid)


def _splits(values) -> list[str]:
    return sorted(set(values), key=lambda v: (SPLIT_ORDER.index(v) if v in SPLIT_ORDER else len(SPLIT_ORDER), v))


def _pivot(data: list[dict], row: str, col: str, value: str, cols: list[str] | None = None) -> list[dict]:
    """Long rows (row, col, value) as a cross-tab: one dict per row value, a column per col value, and a total."""
    cols = cols if cols is not None else _splits(r[col] for r in data)
    table: dict = {}
    for r in data:
        table.setdefault(r[row], {row: r[row]} | dict.fromkeys(cols, 0))[r[col]] = r[value]
    out = [t | {"total": sum(t[c] for c in cols)} for t in table.values()]
    return sorted(out, key=lambda t: (-t["total"], str(t[row])))


def _stacked(table: list[dict], key: str, cols: list[str], label: str, shares: bool = False) -> str:
    return charts.bars(
        [r[key] for r in table], {c: [r[c] for r in table] for c in cols}, stacked=True, shares=shares, label=label
    )


def build_section(corpus: Corpus) -> Section:
    """``shards/build.json``: curator version, recipe sha256, source card versions, start and end (UTC)."""
    if not corpus.exists(BUILD_FILE):
        return Section(
            "Build provenance", None, [], f"No {BUILD_FILE}: these shards were not written by `curator build`."
        )
    b = corpus.read_json(BUILD_FILE)
    recipe, shards = b.get("recipe") or {}, b.get("shards") or {}
    facts = [
        ("curator version", b.get("curator_version")),
        ("recipe", recipe.get("name")),
        ("recipe sha256", recipe.get("sha256")),
        ("seed", recipe.get("seed")),
        ("started (UTC)", b.get("started_at")),
        ("finished (UTC)", b.get("finished_at")),
        ("python", b.get("python")),
        ("libraries", ", ".join(f"{k} {v}" for k, v in (b.get("libraries") or {}).items() if v)),
        ("shards", shards.get("shards")),
        ("samples per split", ", ".join(f"{k} {v:,}" for k, v in (shards.get("samples_per_split") or {}).items())),
        ("manifest sha256", shards.get("manifest_sha256")),
    ]
    cards = ", ".join(
        f"{s['source_id']} {s.get('version') or '-'} ({(s.get('card_sha256') or '')[:12]})"
        for s in b.get("sources") or []
    )
    facts.append(("source cards (version, card sha256)", cards))
    return Section(
        "Build provenance",
        None,
        [{"fact": k, "value": None if v is None else str(v)} for k, v in facts],
        f"From {BUILD_FILE}, written beside the shards (outside the tars, which stay byte-identical across builds).",
    )


def thumbnail_section(corpus: Corpus, con, per_source: int = THUMBS_PER_SOURCE) -> Section:
    """The first ``per_source`` kept samples of each source (by sample id, so a seeded-looking, repeatable pick)."""
    picks = rows(
        con,
        f"""
        SELECT source, sample_id, image_sha256, image_format, split, modality FROM (
            SELECT *, row_number() OVER (PARTITION BY source ORDER BY sample_id) AS k FROM (
                -- a sample once per source, however many of its members the source holds (copies of one image)
                SELECT mb.source_id AS source, s.sample_id, any_value(s.image_sha256) AS image_sha256,
                       min(i.image_format) AS image_format, any_value(s.split) AS split,
                       any_value(s.modality) AS modality
                FROM samples s JOIN members mb USING (sample_id) JOIN images i ON i.sample_id = mb.member_id
                WHERE {KEPT} GROUP BY 1, 2
            )
        ) WHERE k <= {int(per_source)} ORDER BY source, k
        """,
    )
    grid: dict[str, list[str]] = {}
    table = []
    wanted = refs(con, [(p["image_sha256"], blob_ext(p["image_format"]), p["source"]) for p in picks])
    for p, data in zip(picks, read_blobs(corpus, wanted), strict=True):
        uri = _thumbnail(data)
        title = html.escape(f"{p['sample_id']} · {p['split']} · {p['modality']}")
        grid.setdefault(p["source"], []).append(
            f'<figure><img class="thumb" data-source="{html.escape(p["source"])}" src="{uri}" '
            f'alt="{html.escape(p["sample_id"])}" title="{title}"><figcaption>{html.escape(p["split"] or "")}'
            "</figcaption></figure>"
        )
        table.append({"source": p["source"], "sample_id": p["sample_id"], "split": p["split"]})
    body = (
        '<div class="grid">'
        + "".join(
            f'<div class="thumbs" data-source="{html.escape(src)}"><h3>{html.escape(src)}</h3>{"".join(figs)}</div>'
            for src, figs in grid.items()
        )
        + "</div>"
    )
    return Section(
        "Thumbnails per source",
        None,
        table,
        f"Up to {per_source} kept samples per source, the first by sample id (repeatable); "
        f"downscaled to {THUMB_PX} px. `curator trace SAMPLE_ID` shows where each came from.",
        html=body,
    )


def _thumbnail(data: bytes) -> str:
    """An image's bytes as a small JPEG data URI (16-bit grey scaled by its own range, as a viewer shows it)."""
    with Image.open(io.BytesIO(data)) as im:
        if im.mode.startswith("I"):
            a = np.asarray(im, dtype=np.float64)
            lo, hi = float(a.min()), float(a.max())
            im = Image.fromarray(((a - lo) / ((hi - lo) or 1) * 255).astype(np.uint8))
        im = im.convert("RGB" if im.mode not in ("L", "RGB") else im.mode)
        im.thumbnail((THUMB_PX, THUMB_PX), Image.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def crosstab_sections(con) -> list[Section]:
    """Kept samples by source x split and modality x split (a merged sample counts once per source)."""
    by_source = rows(
        con,
        f"SELECT mb.source_id AS source, s.split, count(DISTINCT s.sample_id) AS n FROM samples s "
        f"JOIN members mb USING (sample_id) WHERE {KEPT} GROUP BY 1, 2",
    )
    by_modality = rows(con, f"SELECT s.modality, s.split, count(*) AS n FROM samples s WHERE {KEPT} GROUP BY 1, 2")
    cols = _splits(r["split"] for r in by_source + by_modality)
    out = []
    for title, data, key, stem in (
        ("Source x split", by_source, "source", "source_split"),
        ("Modality x split", by_modality, "modality", "modality_split"),
    ):
        table = _pivot(data, key, "split", "n", cols)
        svgs = [(stem, _stacked(table, key, cols, title))] if table else []
        out.append(Section(title, None, table, "Kept samples; splits are by patient.", svgs))
    return out


def label_section(con) -> Section:
    """Per source, each label's samples by value (positive, negative, uncertain...) and its share of the source."""
    data = rows(
        con,
        f"""
        SELECT a.source_id AS source, a.text AS label, coalesce(a.value, 'positive') AS value,
               count(DISTINCT s.sample_id) AS n
        FROM samples s JOIN members mb USING (sample_id)
        JOIN annotations a ON a.sample_id = mb.member_id AND a.source_id = mb.source_id
        WHERE {KEPT} AND a.kind = 'label' GROUP BY 1, 2, 3
        """,
    )
    labelled = {
        r["source"]: r["n"]
        for r in rows(
            con,
            f"SELECT a.source_id AS source, count(DISTINCT s.sample_id) AS n FROM samples s "
            f"JOIN members mb USING (sample_id) JOIN annotations a ON a.sample_id = mb.member_id "
            f"AND a.source_id = mb.source_id WHERE {KEPT} AND a.kind = 'label' GROUP BY 1",
        )
    }
    values = sorted({r["value"] for r in data}, key=lambda v: (v != "positive", v))
    table: dict = {}
    for r in data:
        row = table.setdefault(
            (r["source"], r["label"]), {"source": r["source"], "label": r["label"]} | dict.fromkeys(values, 0)
        )
        row[r["value"]] = r["n"]
    out = sorted(table.values(), key=lambda t: (t["source"], -t.get("positive", 0), t["label"]))
    for t in out:
        t["share of source"] = (
            f"{100 * t.get('positive', 0) / labelled[t['source']]:.1f}%" if labelled[t["source"]] else "-"
        )
    svgs = []
    for source in sorted(labelled):
        mine = [t for t in out if t["source"] == source][:15]
        svgs.append(
            (
                f"labels_{anchor(source)}",
                charts.bars(
                    [t["label"] for t in mine],
                    {v: [t[v] for t in mine] for v in values},
                    stacked=True,
                    label=f"label balance: {source}",
                    title=source,
                ),
            )
        )
    return Section(
        "Label balance per source",
        None,
        out,
        "Kept samples per label and value, within the source that gave the label; share: positive samples over the "
        "source's labelled samples (multi-label sources add up to more than 100%). Charts: each source's first 15.",
        svgs,
    )


def anchor(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "x"


SIZE_BINS = (
    (0, "< 128"),
    (128, "128-255"),
    (256, "256-511"),
    (512, "512-1023"),
    (1024, "1024-2047"),
    (2048, ">= 2048"),
)


def image_sections(con) -> list[Section]:
    """Image sizes (longest side, binned) and bit depths per source, over kept samples' member images."""
    case = (
        "CASE "
        + " ".join(f"WHEN greatest(i.width, i.height) >= {lo} THEN '{name}'" for lo, name in reversed(SIZE_BINS))
        + " END"
    )
    base = f"FROM samples s JOIN members mb USING (sample_id) JOIN images i ON i.sample_id = mb.member_id WHERE {KEPT}"
    sizes = rows(con, f"SELECT mb.source_id AS source, {case} AS bin, count(*) AS n {base} GROUP BY 1, 2")
    bins = [name for _, name in SIZE_BINS if any(r["bin"] == name for r in sizes)]
    size_table = _pivot(sizes, "source", "bin", "n", bins)
    extent = {
        r["source"]: r
        for r in rows(
            con,
            f"SELECT mb.source_id AS source, min(i.width) AS min_w, CAST(median(i.width) AS INTEGER) AS median_w, "
            f"max(i.width) AS max_w, min(i.height) AS min_h, CAST(median(i.height) AS INTEGER) AS median_h, "
            f"max(i.height) AS max_h {base} GROUP BY 1",
        )
    }
    for t in size_table:
        t.update({k: v for k, v in extent[t["source"]].items() if k != "source"})
    depth = rows(
        con,
        f"SELECT mb.source_id AS source, i.bit_depth || '-bit ' || CASE WHEN i.channels = 3 THEN 'colour' "
        f"ELSE 'grey' END AS depth, count(*) AS n {base} GROUP BY 1, 2",
    )
    kinds = sorted({r["depth"] for r in depth})
    depth_table = _pivot(depth, "source", "depth", "n", kinds)
    overall = {name: sum(r["n"] for r in sizes if r["bin"] == name) for name in bins}
    return [
        Section(
            "Image sizes",
            None,
            size_table,
            "Normalised images (after the recipe's resize policy) by their longest side in pixels, per source; "
            "w/h: width and height.",
            [
                (
                    "image_sizes",
                    charts.columns(
                        bins, {"images": [overall[b] for b in bins]}, x_title="longest side (px)", label="image sizes"
                    ),
                ),
                ("image_sizes_by_source", _stacked(size_table, "source", bins, "image sizes by source")),
            ]
            if size_table
            else [],
        ),
        Section(
            "Bit depth",
            None,
            depth_table,
            "Stored bit depth and channels of the normalised images (16-bit grey keeps CT and MR dynamic range).",
            [("bit_depth", _stacked(depth_table, "source", kinds, "bit depth by source"))] if depth_table else [],
        ),
    ]


def caption_provenance_section(con) -> Section:
    """Who wrote the generated captions (generator, model, prompt and its sha256) and what validation decided."""
    data = rows(
        con,
        """
        SELECT generator, model, prompt_id, prompt_sha256, language, split_part(validation, ':', 1) AS outcome,
               count(*) AS n
        FROM captions GROUP BY ALL
        """,
    )
    served = {
        (r["generator"], r["model"], r["prompt_sha256"], r["language"]): r["n"]
        for r in rows(
            con,
            """
            SELECT c.generator, c.model, c.prompt_sha256, c.language, count(DISTINCT sc.sample_id) AS n
            FROM sample_captions sc JOIN captions c USING (triplet_id, language, caption_index)
            WHERE c.validation = 'ok' GROUP BY ALL
            """,
        )
    }
    table: dict = {}
    for r in data:
        key = (r["generator"], r["model"], r["prompt_id"], r["prompt_sha256"], r["language"])
        t = table.setdefault(
            key,
            {"generator": r["generator"], "model": r["model"], "prompt": r["prompt_id"],
             "prompt sha256": (r["prompt_sha256"] or "")[:12], "language": r["language"], "captions": 0,
             "accepted": 0, "rejected": 0, "reasons": {}},
        )  # fmt: skip
        t["captions"] += r["n"]
        if r["outcome"] == "ok":
            t["accepted"] += r["n"]
        else:
            t["rejected"] += r["n"]
            t["reasons"][r["outcome"]] = t["reasons"].get(r["outcome"], 0) + r["n"]
    out = []
    for key in sorted(table, key=lambda k: tuple(str(x) for x in k)):
        t = table[key]
        t["samples served"] = served.get((key[0], key[1], key[3], key[4]), 0)
        t["reasons"] = ", ".join(f"{k} {v:,}" for k, v in sorted(t["reasons"].items(), key=lambda x: -x[1])) or None
        out.append(t)
    labels = [f"{t['generator']} / {t['model'] or '-'} / {t['prompt']} ({t['language']})" for t in out]
    svgs = (
        [("caption_provenance", charts.bars(labels, {"accepted": [t["accepted"] for t in out],
                                                       "rejected": [t["rejected"] for t in out]}, stacked=True,
                                              label="caption validation outcomes"))]
        if out
        else []
    )  # fmt: skip
    return Section(
        "Caption provenance and validation",
        None,
        out,
        "One row per generator, model, prompt version (its sha256) and language: captions written, accepted and "
        "rejected with the reasons validation gave; samples served: distinct samples that carry an accepted caption "
        "(the sample_captions table).",
        svgs,
    )


def mixture_section(con) -> Section:
    """Each train set's source shares after its weights, beside the natural (unweighted) shares of kept samples."""
    data = rows(
        con,
        """
        SELECT coalesce(sh.mixture, '(main set)') AS mixture, mb.source_id AS source, count(*) AS n
        FROM shards sh JOIN members mb ON mb.sample_id = sh.sample_id AND mb.canonical
        WHERE sh.split = 'train' GROUP BY ALL
        """,
    )
    natural = rows(
        con,
        f"SELECT '(natural, unweighted)' AS mixture, mb.source_id AS source, count(*) AS n FROM samples s "
        f"JOIN members mb ON mb.sample_id = s.sample_id AND mb.canonical WHERE {KEPT} AND s.split = 'train' "
        "GROUP BY ALL",
    )
    sources = sorted({r["source"] for r in data + natural})
    order = ["(natural, unweighted)", "(main set)", *sorted({r["mixture"] for r in data} - {"(main set)"})]
    table = []
    for name in order:
        mine = {r["source"]: r["n"] for r in data + natural if r["mixture"] == name}
        total = sum(mine.values())
        if not total:
            continue
        table += [
            {"mixture": name, "source": src, "train keys": mine.get(src, 0),
             "share": f"{100 * mine.get(src, 0) / total:.1f}%"}
            for src in sources
        ]  # fmt: skip
    wide = _pivot(
        [{"mixture": t["mixture"], "source": t["source"], "n": t["train keys"]} for t in table],
        "mixture",
        "source",
        "n",
        sources,
    )
    wide.sort(key=lambda t: order.index(t["mixture"]))
    svgs = [("mixtures", _stacked(wide, "mixture", sources, "mixture shares", shares=True))] if wide else []
    return Section(
        "Mixture shares after weights",
        None,
        table,
        "Train keys per source in the main shard set and each named mixture after per-source weights (repeats "
        "count as keys, a weight below 1 drops), by each sample's canonical source; natural: kept train samples.",
        svgs,
    )
