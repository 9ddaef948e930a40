"""The corpus card on a real demo build: every figure checked against the tables it comes from.

The browser's view of the same card (every thumbnail decodes, every chart draws)
is tests/test_report_browser.py.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import polars as pl
import pytest
from helpers import run
from PIL import Image

from curator.audit.figures import THUMB_PX, THUMBS_PER_SOURCE
from curator.audit.report import write_report
from curator.storage import Corpus


@pytest.fixture(scope="module")
def card(demo_build, tmp_path_factory) -> tuple[Path, Path, str]:
    """(corpus, card folder, CLI output) of `curator report` on the demo build."""
    out, _ = demo_build
    dest = tmp_path_factory.mktemp("card")
    result = run("report", "--out", out, "--to", dest)
    assert result.exit_code == 0, result.output
    return out, dest, result.output


def _table(out: Path, name: str) -> pl.DataFrame:
    return pl.read_parquet(str(out / "index" / name / "*.parquet"))


def _kept_by_source(out: Path) -> pl.DataFrame:
    kept = _table(out, "samples").filter(pl.col("status") == "keep")
    return kept.join(_table(out, "members"), on="sample_id").select("sample_id", "source_id", "split").unique()


def _md_rows(md: str, title: str) -> list[list[str]]:
    """The Markdown table under ``## title`` as rows of cells (header first)."""
    part = md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in part.splitlines() if line.startswith("| ")]


def test_the_card_is_one_self_contained_html_file(card):
    _, dest, output = card
    page = (dest / "index.html").read_text(encoding="utf-8")
    assert "<link" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert srcs and all(s.startswith("data:image/jpeg;base64,") for s in srcs)
    assert not list(dest.glob("*.png"))  # charts are inline SVG now, none to lose beside the page
    svgs = re.findall(r'<svg class="chart" data-bars="(\d+)"', page)
    assert len(svgs) >= 15 and all(int(n) > 0 for n in svgs)  # every chart drew bars
    assert f"self-contained: {len(svgs)} charts, {len(srcs)} thumbnails inline" in output


def test_thumbnails_are_n_per_source_and_decode(card):
    out, dest, _ = card
    page = (dest / "index.html").read_text(encoding="utf-8")
    sources = sorted(_table(out, "sources")["source_id"])
    per = _kept_by_source(out).group_by("source_id").len()
    assert per["len"].min() >= THUMBS_PER_SOURCE  # so every source shows exactly N
    thumbs = re.findall(r'<img class="thumb" data-source="([^"]+)" src="data:image/jpeg;base64,([^"]+)"', page)
    assert len(thumbs) == len(sources) * THUMBS_PER_SOURCE
    assert sorted({s for s, _ in thumbs}) == sources
    picked = re.findall(r'<img class="thumb" data-source="([^"]+)" src="[^"]+" alt="([^"]+)"', page)
    assert len(set(picked)) == len(picked)  # a sample once per source (MR_small's three copies are one sample)
    for _, data in thumbs:
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            assert im.format == "JPEG" and 0 < max(im.size) <= THUMB_PX
            assert im.convert("L").getextrema()[1] > im.convert("L").getextrema()[0]  # an image, not a blank


def test_source_and_modality_by_split_match_the_tables(card):
    out, dest, _ = card
    md = (dest / "README.md").read_text(encoding="utf-8")
    kept = _kept_by_source(out)
    head, *body = _md_rows(md, "Source x split")
    assert head[:4] == ["source", "train", "val", "test"] and head[-1] == "total"
    got = {r[0]: [int(c.replace(",", "")) for c in r[1:]] for r in body}
    want = kept.group_by("source_id", "split").len()
    for r in want.iter_rows(named=True):
        assert got[r["source_id"]][head.index(r["split"]) - 1] == r["len"]
    assert sorted(got) == sorted(kept["source_id"].unique())
    head, *body = _md_rows(md, "Modality x split")
    samples = _table(out, "samples").filter(pl.col("status") == "keep")
    assert sum(int(r[-1].replace(",", "")) for r in body) == samples.height
    for r in body:
        assert int(r[-1].replace(",", "")) == samples.filter(pl.col("modality") == r[0]).height


def test_label_balance_counts_each_sources_own_labels(card):
    out, dest, _ = card
    md = (dest / "README.md").read_text(encoding="utf-8")
    head, *body = _md_rows(md, "Label balance per source")
    assert head[:3] == ["source", "label", "positive"]
    kept = _kept_by_source(out).select("sample_id", "source_id")
    members = _table(out, "members").select("sample_id", "member_id", "source_id")
    labels = (
        _table(out, "annotations")
        .filter(pl.col("kind") == "label")
        .join(members, left_on=["sample_id", "source_id"], right_on=["member_id", "source_id"])
        .rename({"sample_id_right": "sid"})
        .join(kept, left_on=["sid", "source_id"], right_on=["sample_id", "source_id"])
    )
    want = labels.filter(pl.col("value").fill_null("positive") == "positive").group_by("source_id", "text")
    want = {(r["source_id"], r["text"]): r["sid"] for r in want.agg(pl.col("sid").n_unique()).iter_rows(named=True)}
    got = {(r[0], r[1]): int(r[2].replace(",", "")) for r in body if r[2] != "0"}
    assert got == want and len({s for s, _ in got}) >= 3  # CheXpert, RadImageNet, MSD at least
    assert any(r[0] == "demo_chexpert" and r[1] == "pleural effusion" for r in body)


def test_caption_provenance_counts_accepted_and_rejected(card):
    out, dest, _ = card
    md = (dest / "README.md").read_text(encoding="utf-8")
    head, *body = _md_rows(md, "Caption provenance and validation")
    assert head[:8] == ["generator", "model", "prompt", "prompt sha256", "language", "captions", "accepted", "rejected"]
    captions = _table(out, "captions")
    assert sum(int(r[5].replace(",", "")) for r in body) == captions.height
    assert sum(int(r[6].replace(",", "")) for r in body) == captions.filter(pl.col("validation") == "ok").height
    sha = captions["prompt_sha256"][0]
    assert any(r[3] == sha[:12] for r in body)
    served = _table(out, "sample_captions")["sample_id"].n_unique()
    assert max(int(r[head.index("samples served")].replace(",", "")) for r in body) <= served


def test_image_sizes_bit_depths_and_mixture_shares(card):
    out, dest, _ = card
    md = (dest / "README.md").read_text(encoding="utf-8")
    kept = _kept_by_source(out)
    images = _table(out, "members").join(_table(out, "images"), left_on="member_id", right_on="sample_id")
    images = images.join(kept.select("sample_id").unique(), on="sample_id")
    head, *body = _md_rows(md, "Image sizes")
    assert sum(int(r[head.index("total")].replace(",", "")) for r in body) == images.height
    head, *body = _md_rows(md, "Bit depth")
    sixteen = images.filter((pl.col("bit_depth") == 16) & (pl.col("channels") == 1)).height
    assert sixteen and sum(int(r[head.index("16-bit grey")].replace(",", "")) for r in body) == sixteen
    head, *body = _md_rows(md, "Mixture shares after weights")
    main = [r for r in body if r[0] == "(main set)"]
    keys = _table(out, "shards").filter(pl.col("mixture").is_null() & (pl.col("split") == "train")).height
    assert sum(int(r[2].replace(",", "")) for r in main) == keys
    assert abs(sum(float(r[3].rstrip("%")) for r in main) - 100) < 0.5


def test_build_provenance_comes_from_build_json(card):
    out, dest, _ = card
    build = json.loads((out / "shards" / "build.json").read_text())
    page = (dest / "index.html").read_text(encoding="utf-8")
    for fact in (build["curator_version"], build["recipe"]["sha256"], build["started_at"], build["finished_at"]):
        assert f"<td>{fact}</td>" in page
    assert build["shards"]["manifest_sha256"] in page


def test_the_markdown_card_has_every_section_and_its_charts(card):
    _, dest, _ = card
    md = (dest / "README.md").read_text(encoding="utf-8")
    page = (dest / "index.html").read_text(encoding="utf-8")
    for title in (
        "Build provenance",
        "Thumbnails per source",
        "Source x split",
        "Modality x split",
        "Sources",
        "Label balance per source",
        "Image sizes",
        "Bit depth",
        "Caption provenance and validation",
        "Mixture shares after weights",
        "Modality",
        "Department",
        "Licence and access",
        "Split",
        "Language",
        "Text length",
        "Rejects by reason",
        "Duplicates and hold-out benchmarks",
        "Leakage check",
        "Caption validation",
    ):
        assert f"## {title}\n" in md and f"<h2>{title}</h2>" in page
    charts = re.findall(r"\]\(([^)]+\.svg)\)", md)
    assert sorted(charts) == sorted(p.name for p in dest.glob("*.svg"))
    for name in charts:
        svg = (dest / name).read_text(encoding="utf-8")
        assert svg.startswith('<svg class="chart"') and svg in page
    assert "| truncated | 4 |" in md  # one truncated file in each of four demo sources
    assert "| exact, same source (merged) | 2 |" in md
    assert "No sample matched a hold-out benchmark." in md


def test_other_audits_add_their_fragment_after_the_captions(demo_build, tmp_path):
    out, _ = demo_build
    fragment = '<section id="scores"><h2>LLM-scored audit</h2></section>'
    card = write_report(Corpus(str(out)), tmp_path / "card", fragments=[fragment, ""])
    page = card.html.read_text(encoding="utf-8")
    assert page.count(fragment) == 1
    assert page.index("<h2>Caption validation</h2>") < page.index(fragment)
