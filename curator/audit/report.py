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

import html
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from curator.audit import charts, scores
from curator.audit.figures import (
    KEPT,
    Section,
    anchor,
    build_section,
    caption_provenance_section,
    crosstab_sections,
    image_sections,
    label_section,
    mixture_section,
    thumbnail_section,
)
from curator.errors import CorpusError
from curator.layout import LEFT_OUT
from curator.storage import Corpus
from curator.tables import connect, rows

log = logging.getLogger(__name__)


@dataclass
class Card:
    html: Path
    markdown: Path
    charts: list[Path] = field(default_factory=list)  # the .svg files beside README.md
    thumbnails: int = 0


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
    sections. The LLM-scored audit's (:func:`curator.audit.scores.report_section`) is
    always added: an HTML fragment, "" when the corpus has no scores.
    """
    head, sections = gather(corpus)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.png"):  # an earlier card's matplotlib charts
        old.unlink()
    con = connect(corpus)
    # the LLM-scored audit (`curator audit`): scores per source, worst examples; "" when the corpus has none
    fragments = [*fragments, scores.report_section(con)]
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
    body += [f'<a href="#{anchor(s.title)}">{html.escape(s.title)}</a>' for s in sections]
    body.append("</nav>")
    extra = [f for f in fragments if f]
    for s in sections:
        svgs = list(s.svgs)
        if s.chart:
            svgs.insert(0, (s.chart, _auto_chart(s, con)))
        svgs = [(stem, svg) for stem, svg in svgs if svg]
        md.append(f"## {s.title}\n")
        body.append(f'<section id="{anchor(s.title)}"><h2>{html.escape(s.title)}</h2>')
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
