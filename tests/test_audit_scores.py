"""`curator audit`: an LLM-scored, seeded sample per source (tests/llm_server.py as the judge)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from helpers import copy_corpus, run
from llm_server import FakeLLM

from curator.audit.scores import report_section, sample_texts
from curator.storage import Corpus
from curator.tables import connect

KEY = "sk-audit-test"


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


@pytest.fixture
def llm(monkeypatch):
    with FakeLLM(api_key=KEY) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("CURATOR_LLM_MODEL", server.model)
        yield server


@pytest.fixture
def corpus(demo_build, tmp_path) -> Corpus:
    out, _ = demo_build
    return Corpus(str(copy_corpus(out, tmp_path / "c", done=("ingest", "index", "caption", "instruct", "shard"))))


def scores(corpus: Corpus) -> pl.DataFrame:
    return pl.from_arrow(corpus.read_table("audit_scores"))


def test_audit_scores_a_seeded_sample_per_source_and_a_rerun_calls_nothing(corpus, llm):
    result = run("audit", "--out", corpus.root, "--per-source", 4, "-q")
    assert result.exit_code == 0, result.output
    df = scores(corpus)
    sources = pl.from_arrow(corpus.read_table("instructions"))["source_id"].unique().to_list()
    assert sorted(df["source_id"].unique()) == sorted(sources)
    assert set(df.group_by("source_id").len()["len"]) == {4}
    assert df["score"].null_count() == 0 and set(df["score"]) <= {1, 2, 3, 4, 5}
    assert set(df["status"]) == {"ok"} and df["reason"].str.len_chars().min() > 0
    assert set(df["model"]) == {llm.model} and set(df["prompt_id"]) == {"audit/v1"}
    # the judge saw each text with its sample's metadata; the mock scores 2 when no label is named
    low = df.filter(pl.col("score") == 2)
    assert low.height and all(
        not any(x in t.lower() for x in labels.split(", "))
        for t, labels in zip(low["text"], low["labels"], strict=True)
    )
    assert "audit: 24 instructions texts scored" in result.output and "worst:" in result.output
    calls = llm.calls
    asked = df.select("kind", "language", "text", "labels", "modality", "anatomy").unique()
    assert calls == asked.height  # one request per distinct (text, metadata)
    again = run("audit", "--out", corpus.root, "--per-source", 4, "-q")
    assert again.exit_code == 0 and llm.calls == calls and f"({calls} cached), 0 sent" in again.output
    assert scores(corpus).equals(df)
    # the build's seal covers what the audit wrote
    assert run("verify", "--out", corpus.root, "-q").exit_code == 0


def test_the_sample_is_seeded_and_a_larger_one_extends_it(corpus):
    _, three = sample_texts(corpus, 3, seed=7)
    _, five = sample_texts(corpus, 5, seed=7)
    _, other = sample_texts(corpus, 3, seed=8)
    assert three == sample_texts(corpus, 3, seed=7)[1]
    ids = {r["text_id"] for r in three}
    assert ids < {r["text_id"] for r in five}
    assert ids != {r["text_id"] for r in other}


def test_a_corpus_without_instructions_samples_its_captions(demo_build, tmp_path):
    out, _ = demo_build
    corpus = Corpus(str(copy_corpus(out, tmp_path / "c", done=("ingest", "index", "caption"))))
    corpus.remove_table_part("instructions", "all")
    kind, texts = sample_texts(corpus, 2, seed=0)
    assert kind == "captions" and texts
    assert {r["kind"] for r in texts} <= {"caption", "report", "generated caption"}
    assert all(r["text"].strip() for r in texts)


def test_a_reply_that_is_no_valid_score_is_reasked_then_kept_without_a_score(corpus, llm):
    llm.inject("score_range", times=10_000, when=lambda info: info.get("task") == "audit")
    result = run("audit", "--out", corpus.root, "--per-source", 2, "-q")
    assert result.exit_code == 0, result.output
    df = scores(corpus)
    assert df["score"].null_count() == df.height and set(df["status"]) == {"score_range"}
    assert max(r["info"]["reask"] for r in llm.requests) == 1  # asked again once, with the reason
    reask = llm.requests[-1]["body"]["messages"][-1]["content"]
    assert "outside the rubric's scale" in reask
    html = report_section(connect(corpus))
    assert "<section" in html and "Worst examples" in html


def test_report_section_shows_scores_per_source_and_the_worst_examples(corpus, llm):
    assert report_section(connect(corpus)) == ""  # no scores yet
    assert report_section(connect(corpus, ["samples"])) == ""  # a connection without the table
    assert run("audit", "--out", corpus.root, "--per-source", 3, "-q").exit_code == 0
    df = scores(corpus)
    html = report_section(connect(corpus))
    assert html.startswith('<section id="audit-scores">') and html.rstrip().endswith("</section>")
    for source in df["source_id"].unique():
        assert f"<td>{source}</td>" in html
    worst = df.sort("score", "source_id", "text_id").row(0, named=True)
    assert f"<td>{worst['score']}</td><td>{worst['source_id']}</td>" in html
    assert "<script" not in html and "Q: " in html
    # and `curator report` carries the section in the corpus card
    assert run("report", "--out", corpus.root).exit_code == 0
    card = (Path(corpus.root) / "report" / "index.html").read_text(encoding="utf-8")
    assert '<section id="audit-scores">' in card and f"<td>{worst['source_id']}</td>" in card


def test_user_mistakes_are_one_line(corpus, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    result = run("audit", "--out", corpus.root)
    assert result.exit_code == 1 and result.output.strip().splitlines()[-1].startswith("error: ")
    assert "needs an LLM endpoint" in result.output
    missing = tmp_path / "nothing"
    result = run("audit", "--out", missing)
    assert result.exit_code == 1 and "has no index" in result.output and not missing.exists()
    result = run("audit", "--out", corpus.root, "--per-source", 0)
    assert result.exit_code == 2 and "Traceback" not in result.output
