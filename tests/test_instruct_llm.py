"""The instruct stage's LLM passes (rewrite, region descriptions, translation) against the local
OpenAI-compatible server (tests/llm_server.py), on private copies of the demo corpus."""

from __future__ import annotations

import hashlib
import json
import re

import polars as pl
import pytest
from helpers import copy_corpus, corpus_copies, run
from llm_server import FakeLLM

from curator.config import CaptionSettings, InstructLLMSettings, load_recipe
from curator.instruct.llm_pass import selected
from curator.llm import answers
from curator.llm.prompts import prompts_dir
from curator.stages.instruct import run_instruct
from curator.storage import Corpus

KEY = "sk-instruct-llm-test"
BOX = re.compile(r"\[\d+, \d+, \d+, \d+\]")


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


@pytest.fixture
def corpora(demo_build, tmp_path):
    """Fresh copies of the demo corpus with ingest, index and captions done, instruct to run."""
    return corpus_copies(demo_build[0], tmp_path, done=("ingest", "index", "caption"))


@pytest.fixture
def llm():
    with FakeLLM(api_key=KEY) as server:
        yield server


@pytest.fixture
def base(demo_recipe_path):
    return load_recipe(demo_recipe_path).instruct


def endpoint(server: FakeLLM, **kw) -> CaptionSettings:
    return CaptionSettings(
        **{"base_url": server.base_url, "model": server.model, "backoff_base": 0.001, "concurrency": 8, **kw}
    )


def passes(base, **kw):
    return base.model_copy(update={"llm": InstructLLMSettings(**kw)})


def table(corpus: Corpus) -> pl.DataFrame:
    return pl.from_arrow(corpus.read_table("instructions"))


def sha(prompt_id: str) -> str:
    return hashlib.sha256((prompts_dir() / f"{prompt_id}.toml").read_bytes()).hexdigest()


def test_rewrite_and_regions_keep_every_fact_and_record_their_prompt(corpora, llm, base):
    corpus = corpora()
    result = run_instruct(corpus, passes(base, rewrite=True, regions=True), False, endpoint(llm))
    df = table(corpus)
    by_llm = df.filter(pl.col("generator") == "llm")
    rewritten = by_llm.filter(pl.col("task") != "region")
    regions = by_llm.filter(pl.col("task") == "region")
    assert rewritten.height and regions.height == df.filter(pl.col("task") == "region").height
    assert set(rewritten["prompt_id"]) == {"instruct/rewrite/v1"}
    assert set(rewritten["prompt_sha256"]) == {sha("instruct/rewrite/v1")}
    assert set(regions["prompt_id"]) == {"instruct/region/v1"} and set(by_llm["model"]) == {llm.model}
    # every templated answer of a rewritten task was rewritten; source texts were not touched
    eligible = df.filter(pl.col("task").is_in(["classification", "grounding", "recognition"]))
    assert set(eligible["generator"]) == {"llm"}
    assert "llm" not in set(df.filter(pl.col("task").is_in(["caption", "report", "vqa"]))["generator"])
    for row in by_llm.iter_rows(named=True):
        origin = json.loads(row["origin"])
        template = origin["template"]
        assert template["prompt_id"] == "instruct/v1" and template["answer"] != row["turns"][1]["value"]
        answer = row["turns"][1]["value"]
        if row["task"] == "grounding":  # the boxes survive verbatim
            assert BOX.findall(answer) == BOX.findall(template["answer"]) and BOX.findall(answer)
        if row["form"] == "yesno":
            yes = template["answer"] in ("Yes.", "是。")
            assert answer.startswith(("Yes", "是") if yes else ("No", "否"))
        if row["task"] == "region":  # a description of the finding, not the box echoed back
            assert not BOX.search(answer) and answer != template["answer"]
    # identical (question, answer, language) triples were asked once
    assert result.llm.jobs == llm.calls < rewritten.height + regions.height
    assert result.llm.passes["rewrite"].llm == rewritten.height and result.llm.passes["rewrite"].fallback == 0
    # the passes' own sampling temperature and structured output, over the caption endpoint's settings
    assert {r["body"]["temperature"] for r in llm.requests} == {0.3}
    assert {r["body"]["response_format"]["json_schema"]["name"] for r in llm.requests} == {"rewrite", "region"}


@pytest.mark.slow
def test_a_malformed_reply_is_reasked_then_the_template_stays_labelled_as_fallback(corpora, llm, base):
    corpus = corpora()
    llm.inject("malformed", times=10_000, when=lambda info: info.get("task") == "rewrite")
    result = run_instruct(corpus, passes(base, rewrite=True, max_regenerations=1), False, endpoint(llm))
    df = table(corpus)
    fallback = df.filter(pl.col("generator") == "template-fallback")
    assert fallback.height == result.llm.passes["rewrite"].fallback > 0
    assert result.llm.passes["rewrite"].llm == 0 and dict(result.llm.passes["rewrite"].reasons) == {
        "malformed_json": fallback.height
    }
    # each distinct request was asked twice (the re-ask continues the conversation), never more
    rewrites = [r for r in llm.requests if r["info"].get("task") == "rewrite"]
    assert len(rewrites) == 2 * result.llm.jobs
    assert max(r["info"]["reask"] for r in rewrites) == 1
    for row in fallback.iter_rows(named=True):
        origin = json.loads(row["origin"])
        assert origin["llm"]["failure"] == "malformed_json" and origin["llm"]["prompt_id"] == "instruct/rewrite/v1"
        assert row["prompt_id"] == "instruct/v1" and row["model"] == "curator-instruct-v1"  # the template's answer
    # a reply that drops what it must keep is refused the same way
    corpus = corpora()
    llm.clear_faults()
    llm.inject("drop_keep", times=10_000, when=lambda info: info.get("task") == "rewrite")
    result = run_instruct(corpus, passes(base, rewrite=True, max_regenerations=0), False, endpoint(llm))
    reasons = result.llm.passes["rewrite"].reasons
    assert set(reasons) <= {"keep_missing", "polarity"}
    assert sum(reasons.values()) == result.llm.passes["rewrite"].entries


def test_a_rerun_reuses_the_cache_and_gives_the_same_table(corpora, llm, base):
    corpus = corpora()
    settings = passes(base, rewrite=True, regions=True, translate=0.5)
    run_instruct(corpus, settings, False, endpoint(llm))
    first, calls = table(corpus), llm.calls
    corpus.clear_marker("instruct", "all")  # make the stage run again: every answer comes from the cache
    again = run_instruct(corpus, settings, False, endpoint(llm))
    assert llm.calls == calls and again.llm.cached == again.llm.jobs and not again.skipped
    assert table(corpus).equals(first)
    # another corpus, same inputs and seed: the same entries (the selection and the replies are deterministic)
    other = corpora()
    run_instruct(other, settings, False, endpoint(llm))
    assert table(other).equals(first)


def test_translation_takes_a_seeded_share_of_english_only_entries(corpora, llm, base):
    corpus = corpora()
    result = run_instruct(corpus, passes(base, translate=0.5), False, endpoint(llm))
    df = table(corpus)
    zh = df.filter(pl.col("translated"))
    assert zh.height == result.translated == result.llm.passes["translate"].llm > 0
    assert set(zh["language"]) == {"zh"} and set(zh["prompt_id"]) == {"instruct/translate/v1"}
    assert set(zh["prompt_sha256"]) == {sha("instruct/translate/v1")} and set(zh["generator"]) == {"llm"}
    english = df.filter(
        (pl.col("language") == "en")
        & pl.col("task").is_in(["caption", "report", "vqa"])
        & (pl.col("form") != "generated")
    )
    picked = {e for e in english["entry_id"] if selected(base.seed, "translate", e, 0.5)}
    assert {json.loads(o)["translated_from"] for o in zh["origin"]} == picked
    assert 0 < len(picked) < english.height
    for row in zh.iter_rows(named=True):
        assert all(answers.check_translation("", t["value"]) == "ok" for t in row["turns"])
    assert not df.filter(~pl.col("translated"))["language"].is_null().any()


def test_a_translation_that_is_not_chinese_is_rejected(corpora, llm, base):
    assert answers.check_translation("Pleural effusion, 5 mm.", "Pleural effusion, 5 mm.") == "wrong_language"
    assert answers.check_translation("Pleural effusion, 5 mm.", "胸腔积液，5毫米。") == "ok"
    assert answers.check_translation("Pleural effusion, 5 mm.", "胸腔积液。") == "number_missing"
    assert answers.check_translation("An effusion.", "胸腔 effusion 积液") == "latin_in_chinese"
    corpus = corpora()
    llm.inject("wrong_language", times=10_000, when=lambda info: info.get("task") == "translate")
    result = run_instruct(corpus, passes(base, translate=1.0), False, endpoint(llm))
    stats = result.llm.passes["translate"]
    assert stats.entries > 0 and stats.llm == 0 and dict(stats.reasons) == {"wrong_language": stats.entries}
    assert table(corpus).filter(pl.col("translated")).height == 0  # nothing untranslated ships as Chinese


def test_rewrite_checks():
    check = answers.check_rewrite
    assert check("Yes, there is an effusion.", "en", (), True) == "ok"
    assert check("No, there is an effusion.", "en", (), True) == "polarity"
    assert check("否，未见胸腔积液。", "zh", (), False) == "ok"
    assert check("B. Cardiomegaly is the answer.", "en", ("B", "cardiomegaly"), None) == "ok"
    assert check("Cardiomegaly is the answer.", "en", ("B", "cardiomegaly"), None) == "keep_missing"
    assert check("It is at [1, 2, 30, 40].", "en", ("[1, 2, 30, 40]",), None) == "ok"
    assert check("It is at [1, 2, 30, 41].", "en", ("[1, 2, 30, 40]",), None) == "keep_missing"
    assert check("Here is the answer: yes.", "en", (), None) == "meta_text"
    assert check("是的 yes indeed it is", "zh", (), None) == "wrong_language"


def test_without_an_endpoint_the_passes_are_off_and_the_entries_stay_templated(corpora, base, caplog):
    corpus = corpora()
    result = run_instruct(corpus, passes(base, rewrite=True, translate=0.3), False, CaptionSettings())
    assert result.llm.off_reason and "no LLM endpoint" in caplog.text
    assert set(table(corpus)["generator"]) <= {"template", "source"}


def test_the_cli_runs_the_passes_the_recipe_asks_for_and_prints_them(demo_build, demo_recipe_path, llm, tmp_path):
    out, _ = demo_build
    corpus = copy_corpus(out, tmp_path / "c", done=("ingest", "index", "caption"))
    text = demo_recipe_path.read_text(encoding="utf-8")
    text = text.replace("[caption]\n", f'[caption]\nbase_url = "{llm.base_url}"\nmodel = "{llm.model}"\n', 1)
    text += "\n[instruct.llm]\nrewrite = true\nregions = true\ntranslate = 0.3\n"
    recipe = tmp_path / "llm.toml"
    recipe.write_text(text, encoding="utf-8")
    result = run("instruct", "--out", corpus, "--recipe", recipe, "-q")
    assert result.exit_code == 0, result.output
    assert f"llm passes: model {llm.model}" in result.output
    assert re.search(r"rewrite +\d+ entries: \d+ by the LLM, 0 template-fallback", result.output)
    assert "[instruct/translate/v1 " in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("translate = 0.3", "translate = 3"), encoding="utf-8")
    result = run("instruct", "--out", corpus, "--recipe", bad)
    assert result.exit_code == 1 and result.output.startswith("error: ") and "translate" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_an_unreachable_endpoint_is_one_line_and_writes_nothing(demo_build, demo_recipe_path, tmp_path):
    out, _ = demo_build
    corpus = copy_corpus(out, tmp_path / "c", done=("ingest", "index", "caption"))
    before = sorted(p.name for p in (corpus / "index" / "instructions").glob("*.parquet"))
    text = demo_recipe_path.read_text(encoding="utf-8")
    text = text.replace("[caption]\n", '[caption]\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\n', 1)
    recipe = tmp_path / "llm.toml"
    recipe.write_text(text + "\n[instruct.llm]\nrewrite = true\n", encoding="utf-8")
    result = run("instruct", "--out", corpus, "--recipe", recipe, "-q")
    assert result.exit_code == 1 and "Traceback" not in result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot reach the LLM endpoint http://127.0.0.1:9")
    assert sorted(p.name for p in (corpus / "index" / "instructions").glob("*.parquet")) == before
