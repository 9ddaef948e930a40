"""report: the corpus card a data team opens first, as one self-contained HTML file and as Markdown.

Every figure is a DuckDB aggregate over the index tables (plus ``shards/build.json``
for the build's provenance and the blobs for thumbnails). ``index.html`` holds
everything inline: SVG charts (:mod:`curator.audit.charts`), thumbnails as small
base64 JPEG data URIs, the stylesheet, so it opens from a mail attachment or a
bucket with no network. ``README.md`` holds the same tables in Markdown beside
one ``.svg`` file per chart. The card answers what an auditor or a training team
asks first: what is in the corpus and how it splits (source x split, modality x
split), label balance per source, what the images look like (thumbnails, sizes,
bit depths), which generator, model and prompt wrote the captions and what
validation rejected, what each mixture's weights make of the sources, under
which licences, what was rejected, merged or leaked, and which build made it.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from curator.audit import charts
from curator.blobs import blob_ext, blob_path
from curator.errors import CorpusError
from curator.layout import LEFT_OUT
from curator.storage import Corpus
from curator.tables import connect, rows

log = logging.getLogger(__name__)
KEPT = "s.status = 'keep'"
BUILD_FILE = "shards/build.json"  # curator.provenance.BUILD_FILE (audit reads what stages wrote, imports none)
THUMBS_PER_SOURCE = 4
THUMB_PX = 128  # longest side of a thumbnail: ~3-6 KB each as JPEG
SPLIT_ORDER = ("train", "val", "test")


@dataclass
class Card:
    html: Path
    markdown: Path
    charts: list[Path] = field(default_factory=list)  # the .svg files beside README.md
    thumbnails: int = 0


@dataclass
class Section:
    """One heading of the card: a table, its note, and charts (``chart`` names the generic bar chart of the table)."""

    title: str
    chart: str | None
    table: list[dict]
    note: str = ""
    svgs: list[tuple[str, str]] = field(default_factory=list)  # (file stem, SVG) drawn by the section itself
    html: str = ""  # extra HTML after the charts (the thumbnail grid)


def _counts(con, sql: str) -> list[dict]:
    return rows(con, sql)


def gather(corpus: Corpus) -> tuple[dict, list[Section]]:
    """The figures of a card: headline numbers and one section per chart."""
    if not corpus.table_parts("samples"):
        raise CorpusError(f"{corpus.url} has no 'samples' table: run `curator build` first")
    con = connect(corpus)
    head = rows(
        con,
        f"""
        SELECT (SELECT count(*) FROM sources) AS sources, (SELECT count(*) FROM images) AS images,
               (SELECT count(*) FROM samples) AS samples, (SELECT count(*) FROM samples s WHERE {KEPT}) AS kept,
               (SELECT count(*) FROM rejects) AS rejects, (SELECT count(DISTINCT shard_url) FROM shards) AS shards,
               (SELECT count(DISTINCT sample_id) FROM shards WHERE mixture IS NULL) AS sharded,
               (SELECT count(*) FROM shards) AS keys
        """,
    )[0]
    # kept samples the main set drops on purpose (weight below 1), as the shard stage records them
    head["weight_dropped"] = (
        sum(e["reason"] == "weight" for e in corpus.read_json(LEFT_OUT)["samples"]) if corpus.exists(LEFT_OUT) else 0
    )
    by = "FROM samples s JOIN members mb USING (sample_id) JOIN sources src ON src.source_id = mb.source_id"
    sections = [
        Section(
            "Sources",
            "sources",
            _counts(
                con,
                f"""
                SELECT src.source_id AS source, any_value(src.name) AS name, any_value(src.version) AS version,
                       any_value(src.license) AS licence, any_value(src.access) AS access,
                       count(DISTINCT mb.member_id) AS images,
                       count(DISTINCT s.sample_id) FILTER (WHERE {KEPT}) AS samples
                {by} GROUP BY 1 ORDER BY samples DESC, source
                """,
            ),
            "A sample merged from several sources counts once for each.",
        ),
        Section(
            "Modality",
            "modality",
            _counts(
                con, f"SELECT modality, count(*) AS samples FROM samples s WHERE {KEPT} GROUP BY 1 ORDER BY 2 DESC"
            ),
        ),
        Section(
            "Department",
            "department",
            _counts(
                con, f"SELECT department, count(*) AS samples FROM samples s WHERE {KEPT} GROUP BY 1 ORDER BY 2 DESC"
            ),
        ),
        Section(
            "Licence and access",
            "licence",
            _counts(
                con,
                f"SELECT src.license AS licence, src.access AS access, count(DISTINCT s.sample_id) AS samples "
                f"{by} WHERE {KEPT} GROUP BY 1, 2 ORDER BY 3 DESC",
            ),
        ),
        Section(
            "Split",
            "split",
            _counts(
                con,
                f"SELECT split, count(*) AS samples, count(*) FILTER (WHERE split_rule = 'strictest') AS moved "
                f"FROM samples s WHERE {KEPT} GROUP BY 1 ORDER BY CASE split WHEN 'train' THEN 0 "
                f"WHEN 'val' THEN 1 ELSE 2 END",
            ),
            "moved: samples put in a stricter split because merged members or their patient disagreed.",
        ),
        Section(
            "Language",
            "language",
            _counts(
                con,
                f"""
                SELECT language, sum(source_texts)::BIGINT AS source_texts,
                       sum(generated)::BIGINT AS unique_generated_captions
                FROM (
                    SELECT a.language, count(*) AS source_texts, 0 AS generated
                    FROM samples s JOIN members mb USING (sample_id) JOIN annotations a ON a.sample_id = mb.member_id
                    WHERE {KEPT} AND a.kind <> 'label' GROUP BY 1
                    UNION ALL
                    SELECT language, 0, count(*) FROM captions WHERE validation = 'ok' GROUP BY 1
                ) GROUP BY 1 ORDER BY 1
                """,
            ),
            "Generated captions are counted once per (label, anatomy, modality) triplet, not per image.",
        ),
        Section(
            "Text length",
            "text_length",
            _counts(
                con,
                f"""
                SELECT 'source text' AS kind, a.language, count(*) AS n, min(length(a.text)) AS min_chars,
                       CAST(median(length(a.text)) AS INTEGER) AS median_chars, max(length(a.text)) AS max_chars
                FROM samples s JOIN members mb USING (sample_id) JOIN annotations a ON a.sample_id = mb.member_id
                WHERE {KEPT} AND a.kind <> 'label' GROUP BY 1, 2
                UNION ALL
                SELECT 'generated caption', language, count(*), min(length(caption)),
                       CAST(median(length(caption)) AS INTEGER), max(length(caption))
                FROM captions GROUP BY 1, 2 ORDER BY 1, 2
                """,
            ),
            "Lengths in characters (Chinese has no word spaces).",
        ),
        Section(
            "Rejects by reason",
            "rejects",
            _counts(
                con,
                "SELECT reason, count(*) AS inputs, string_agg(DISTINCT source_id, ', ' ORDER BY source_id) AS sources "
                "FROM rejects GROUP BY 1 ORDER BY 2 DESC, 1",
            ),
            "Every input an adapter saw is either indexed or rejected with one of these reasons.",
        ),
        Section(
            "Duplicates and hold-out benchmarks",
            "duplicates",
            _counts(
                con,
                """
                SELECT k.what, coalesce(c.n, 0) AS n
                FROM (VALUES (1, 'exact, same source (merged)'), (2, 'exact, across sources (merged)'),
                             (3, 'near (flagged)'), (4, 'near (dropped)'),
                             (5, 'hold-out match (excluded)'), (6, 'hold-out near match (flagged)')) k(i, what)
                LEFT JOIN (
                    SELECT CASE kind WHEN 'exact_same_source' THEN 'exact, same source (merged)'
                                     WHEN 'exact_cross_source' THEN 'exact, across sources (merged)'
                                     ELSE 'near (' || action || ')' END AS what, count(*) AS n
                    FROM duplicates GROUP BY 1
                    UNION ALL
                    SELECT CASE action WHEN 'excluded' THEN 'hold-out match (excluded)'
                                       ELSE 'hold-out near match (flagged)' END, count(DISTINCT sample_id)
                    FROM leakage GROUP BY 1
                ) c USING (what)
                ORDER BY k.i
                """,
            ),
            "exact: identical pixels merged into one sample; near: dHash within the recipe's threshold; "
            "hold-out: benchmark images matched by file hash, pixel hash or dHash (GMAI-VL's leakage check).",
        ),
    ]
    sections += instruct_sections(corpus, con)
    leaks = _counts(
        con,
        "SELECT l.benchmark, l.benchmark_item, l.match, l.distance, l.action, l.sample_id, s.split "
        "FROM leakage l JOIN samples s USING (sample_id) ORDER BY 1, 2 LIMIT 50",
    )
    sections.append(
        Section(
            "Leakage check",
            None,
            leaks,
            "No sample matched a hold-out benchmark." if not leaks else "First 50 matches; `curator query` lists all.",
        )
    )
    sections += caption_sections(con, corpus)
    # what a data team reads first, then the sources table, then what the images and texts are
    first = [build_section(corpus), thumbnail_section(corpus, con), *crosstab_sections(con)]
    middle = [
        label_section(con),
        *image_sections(con),
        caption_provenance_section(con),
        mixture_section(con),
    ]
    return head, [*first, sections[0], *middle, *sections[1:]]


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
    for p in picks:
        uri = _thumbnail(corpus, p["image_sha256"], p["image_format"])
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


def _thumbnail(corpus: Corpus, sha256: str, image_format: str | None) -> str:
    """A blob as a small JPEG data URI (16-bit grey scaled by its own range, as a viewer shows it)."""
    rel = blob_path(sha256, blob_ext(image_format))
    try:
        data = corpus.read_bytes(rel)
    except FileNotFoundError:
        raise CorpusError(f"{corpus.url}: blob {rel} is missing: run `curator verify`") from None
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
                f"labels_{_stem(source)}",
                charts.bars(
                    [t["label"] for t in mine],
                    {v: [t[v] for t in mine] for v in values},
                    stacked=True,
                    label=f"label balance: {source}",
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


def _stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "x"


SIZE_BINS = (
    (0, "< 128"),
    (128, "128-255"),
    (256, "256-511"),
    (512, "511-1023"),
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


def instruct_sections(corpus: Corpus, con) -> list[Section]:
    """Instruction data: tasks and entries per image (IMAX's measure), the task mix, mixtures, drops."""
    from curator.instruct.stats import IMAX_ENTRIES_PER_IMAGE, IMAX_TASKS_PER_IMAGE, task_mix, task_stats

    if not corpus.table_parts("instructions"):
        return []
    marker = corpus.marker("instruct", "all") or {}
    drops = [{"reason": k, "dropped": v} for k, v in sorted((marker.get("drops") or {}).items())]
    return [
        Section(
            "Instruction tasks per image",
            None,
            task_stats(con),
            f"IMAX's image-centric reference: {IMAX_TASKS_PER_IMAGE:.2f} tasks and {IMAX_ENTRIES_PER_IMAGE:.2f} "
            "entries per image. Per source by each sample's canonical member; entries_per_image_en counts English "
            "entries only (the monolingual figure).",
        ),
        Section(
            "Instruction task mix",
            None,
            task_mix(con),
            "family is what mixtures weight: caption, instruction (classification, VQA, recognition), report, "
            "grounding (grounding and region description).",
        ),
        Section(
            "Mixture task-family shares",
            None,
            marker.get("mixtures") or [],
            "Per named mixture (the recipe's [instruct.mixtures]): the weight each family's train entries get so that "
            "the mixture has the target shares.",
        ),
        Section(
            "Instruction inputs dropped",
            None,
            drops,
            "Counted and never written: boxes outside their image, empty answers, labels outside the vocabulary.",
        ),
    ]


def caption_sections(con, corpus: Corpus) -> list[Section]:
    """Caption diversity beside UniMed's released captions, and what validation rejected and why."""
    from curator.llm.diversity import REFERENCE, measure
    from curator.llm.validate import REASONS

    if not corpus.table_parts("captions"):
        return []
    ok = rows(con, "SELECT triplet_id, language, generator, caption FROM captions WHERE validation = 'ok'")
    diversity = [
        {k: r[k] for k in ("generator", "language", "triplets", "captions")}
        | {
            "distinct-1 within": r["distinct1_within"],
            "distinct-2 within": r["distinct2_within"],
            "distinct-1 corpus": r["distinct1_corpus"],
            "distinct-2 corpus": r["distinct2_corpus"],
            "mean length": r["mean_length"],
            "sd": r["length_sd"],
            "unit": r["unit"],
        }
        for r in [*measure(ok), REFERENCE]
    ]
    checks = rows(
        con,
        """
        SELECT generator, language, validation, count(*) AS captions,
               min(caption) FILTER (WHERE validation <> 'ok') AS example
        FROM captions GROUP BY 1, 2, 3 ORDER BY validation = 'ok' DESC, 4 DESC, 1, 2, 3
        """,
    )
    for r in checks:
        code = r["validation"]
        r["why"] = "passed every check" if code == "ok" else REASONS.get(code.split(":")[0], code)
        r["example"] = (r["example"] or "")[:120] or None
    return [
        Section(
            "Caption diversity",
            None,
            diversity,
            "distinct-n: unique n-grams / all n-grams, within each triplet's captions (averaged over triplets) and "
            "across all captions of a generator and language; tokens are English words and Chinese characters. "
            "The reference row is UniMed-CLIP's released RadImageNet captions.",
        ),
        Section(
            "Caption validation",
            None,
            checks,
            "Every generated caption and its verdict; only `ok` captions reach a shard. Failed requests and "
            "unusable replies (prose, refusal, truncated) are rows too.",
        ),
    ]


def _auto_chart(section: Section, con) -> str:
    """The generic chart of a section's table: its first column as rows, its non-zero counts as series."""
    t = section.table
    if section.chart == "text_length":
        return _length_chart(con)
    if not t:
        return ""
    key = next(iter(t[0]))
    numeric = [k for k, v in t[0].items() if isinstance(v, int | float) and k != key and k != "version"]
    if section.chart == "sources":
        numeric = ["images", "samples"]
    if len(numeric) > 1:  # a series of zeros (nothing moved) says nothing a table does not
        numeric = [k for k in numeric if any(r[k] for r in t)] or numeric[:1]
    if section.chart == "licence":
        labels = [f"{r['licence']} ({r['access']})" for r in t]
    else:
        labels = [r[key] for r in t]
    return charts.bars(labels, {k.replace("_", " "): [r[k] or 0 for r in t] for k in numeric}, label=section.title)


def _length_chart(con) -> str:
    data = rows(
        con,
        """
        SELECT 'source text, ' || coalesce(a.language, '?') AS series, length(a.text) AS n
        FROM samples s JOIN members mb USING (sample_id) JOIN annotations a ON a.sample_id = mb.member_id
        WHERE s.status = 'keep' AND a.kind <> 'label'
        UNION ALL
        SELECT 'generated caption, ' || language, length(caption) FROM captions
        """,
    )
    if not data:
        return ""
    series: dict[str, list[int]] = {}
    for r in data:
        series.setdefault(r["series"], []).append(r["n"])
    top = max(max(v) for v in series.values())
    step = max(5, -(-top // 24))
    edges = list(range(0, top + step, step))
    counts = {
        f"{name} (n={len(values)})": [sum(lo <= v < lo + step for v in values) for lo in edges]
        for name, values in sorted(series.items())
    }
    return charts.columns([str(lo) for lo in edges], counts, x_title="characters", label="Text length")


def _md_table(t: list[dict]) -> str:
    if not t:
        return "_none_\n"
    cols = list(t[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r[c]).replace("|", "\\|") for c in cols) + " |" for r in t]
    return "\n".join(lines) + "\n"


def _html_table(t: list[dict]) -> str:
    if not t:
        return "<p><em>none</em></p>"
    cols = list(t[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td{_num(r[c])}>{html.escape(_fmt(r[c]))}</td>" for c in cols) + "</tr>" for r in t
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _num(v) -> str:
    return ' class="n"' if isinstance(v, int | float) and not isinstance(v, bool) else ""


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 64rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .85rem; }
th, td { border-bottom: 1px solid #ddd; padding: .2rem .55rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #555; font-size: .9rem; } svg.chart { display: block; max-width: 100%; height: auto; margin: .5rem 0; }
.head { display: flex; gap: 1.5rem; flex-wrap: wrap; } .head div { font-size: 1.4rem; }
.head span { display: block; font-size: .8rem; color: #666; }
nav { font-size: .85rem; columns: 3; margin: 1rem 0; } nav a { display: block; color: #3b6ea8; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(28rem, 1fr)); gap: 0 1.5rem; }
.thumbs { margin: .25rem 0 .5rem; white-space: nowrap; overflow: hidden; }
.thumbs h3 { margin: .4rem 0 .2rem; font-size: .95rem; }
figure { display: inline-block; vertical-align: bottom; margin: 0 .35rem 0 0; text-align: center; font-size: .75rem;
  color: #666; }
figure img { display: block; height: 84px; width: auto; border: 1px solid #ccc; background: #000; }
details summary { cursor: pointer; color: #555; font-size: .85rem; }
"""

# Once the page has loaded, record on <body> how many images decoded and how many charts
# drew a bar, so a headless browser's DOM dump says whether the card rendered.
CHECK = """
window.addEventListener("load", () => {
  const imgs = [...document.images], svgs = [...document.querySelectorAll("svg.chart")];
  const b = document.body.dataset;
  b.images = imgs.length;
  b.imagesLoaded = imgs.filter((i) => i.complete && i.naturalWidth > 0).length;
  b.charts = svgs.length;
  b.chartsDrawn = svgs.filter((s) => s.querySelector("rect.bar") && s.getBBox().width > 0).length;
  b.rendered = "yes";
});
"""


def write_report(corpus: Corpus, dest: Path, fragments: Sequence[str] = ()) -> Card:
    """Write ``index.html`` (self-contained) and ``README.md`` with one ``.svg`` per chart into ``dest``.

    ``fragments`` are HTML sections other audits contribute, placed after the caption
    sections. The LLM-scored audit joins here: the CLI passes
    ``curator.audit.scores.report_section(con)`` (an HTML fragment, "" when no scores).
    """
    head, sections = gather(corpus)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.png"):  # an earlier card's matplotlib charts
        old.unlink()
    con = connect(corpus)
    card = Card(dest / "index.html", dest / "README.md")
    title = f"Corpus card: {corpus.url}"
    headline = [
        ("sources", head["sources"]),
        ("image rows", head["images"]),
        ("samples kept", head["kept"]),
        ("samples left out", head["samples"] - head["kept"]),
        ("in the main shard set", head["sharded"]),
        ("dropped by weight", head["weight_dropped"]),
        ("shard keys (main set, mixtures, repeats)", head["keys"]),
        ("shards", head["shards"]),
        ("inputs rejected", head["rejects"]),
    ]
    md = [f"# {title}\n", " · ".join(f"**{v:,}** {k}" for k, v in headline) + "\n"]
    body = [f"<h1>{html.escape(title)}</h1>", '<div class="head">']
    body += [f"<div>{v:,}<span>{html.escape(k)}</span></div>" for k, v in headline]
    body.append("</div><nav>")
    body += [f'<a href="#{_stem(s.title)}">{html.escape(s.title)}</a>' for s in sections]
    body.append("</nav>")
    extra = [f for f in fragments if f]
    for s in sections:
        svgs = list(s.svgs)
        if s.chart:
            svgs.insert(0, (s.chart, _auto_chart(s, con)))
        svgs = [(stem, svg) for stem, svg in svgs if svg]
        md.append(f"## {s.title}\n")
        body.append(f'<section id="{_stem(s.title)}"><h2>{html.escape(s.title)}</h2>')
        if s.note:
            md.append(f"_{s.note}_\n")
            body.append(f'<p class="note">{html.escape(s.note)}</p>')
        for stem, svg in svgs:
            path = dest / f"{stem}.svg"
            path.write_text(svg, encoding="utf-8")
            card.charts.append(path)
            md.append(f"![{s.title}]({path.name})\n")
            body.append(svg)
        body.append(s.html)
        md.append(_md_table(s.table))
        long = bool(s.html) or (len(s.table) > 30 and bool(svgs))
        table = _html_table(s.table)
        body.append(f"<details><summary>{len(s.table)} rows</summary>{table}</details>" if long else table)
        body.append("</section>")
        if s.title == "Caption validation" and extra:
            body += extra
            extra = []
    body += extra  # a corpus without captions has no caption section to follow
    card.thumbnails = sum(s.html.count('class="thumb"') for s in sections)
    card.markdown.write_text("\n".join(md), encoding="utf-8")
    card.html.write_text(
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
        f"<body>{''.join(body)}<script>{CHECK}</script></body></html>\n",
        encoding="utf-8",
    )
    log.info("report written to %s", dest)
    return card
