"""`curator caption`: the plan printed first, --dry-run, token and cost summary, resuming a killed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import copy_corpus, run
from llm_server import FakeLLM

from curator.cli import main
from curator.stages.caption import sample_triplets
from curator.storage import Corpus

KEY = "sk-cli-test-key-0000"


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    # conftest clears the developer's OPENAI_* / CURATOR_* variables for the whole session
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


@pytest.fixture
def corpus_dir(demo_build, tmp_path) -> Path:
    out, _ = demo_build
    dest = copy_corpus(out, tmp_path / "corpus")  # ingest and index done, caption afresh
    return dest


@pytest.fixture
def llm():
    with FakeLLM(api_key=KEY) as server:
        yield server


def recipe(tmp_path: Path, server: FakeLLM, **caption) -> Path:
    lines = ['name = "t"', "sources = []", "[caption]", "captions_per_triplet = 3", "backoff_base = 0.001"]
    lines += [f'model = "{server.model}"'] + [f"{k} = {v!r}".replace("'", '"') for k, v in caption.items()]
    path = tmp_path / "recipe.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_dry_run_prints_triplets_calls_and_tokens_and_calls_nothing(corpus_dir, llm, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", llm.base_url)
    n = len(set(sample_triplets(Corpus(str(corpus_dir))).values()))
    result = run("caption", "--out", str(corpus_dir), "--recipe", str(recipe(tmp_path, llm)), "--dry-run")
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"generator   llm: model {llm.model} at http://127.0.0.1:" in out
    assert f"{n} unique triplets x 2 languages (en, zh) = {2 * n} calls planned" in out
    assert f"cached 0, to call {2 * n}; estimated tokens " in out
    assert out.count(" | chest | X-ray") >= 5 and "dry run: nothing called, nothing written" in out
    assert llm.calls == 0 and llm.model_listings == 0
    assert not (corpus_dir / "cache").exists()


def test_caption_prints_the_plan_then_tokens_and_cost(corpus_dir, llm, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", llm.base_url)
    path = recipe(tmp_path, llm, price_input_per_million=0.5, price_output_per_million=2.0)
    result = run("caption", "--out", str(corpus_dir), "--recipe", str(path), "--quiet")
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.index("caption plan") < out.index("captions by generator: llm=")
    assert f"{llm.calls} jobs, 0 cached, 0 failed; {llm.calls} requests (0 retries); tokens " in out
    assert ", estimated cost " in out and ", cost 0.0" in out
    again = run("caption", "--out", str(corpus_dir), "--recipe", str(path), "--quiet")
    assert "cached " in again.output and "(unchanged, skipped)" in again.output
    assert KEY not in out + again.output


def test_without_an_endpoint_the_plan_names_the_offline_generator(corpus_dir, tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('name = "t"\nsources = []\n[caption]\ncaptions_per_triplet = 2\n')
    result = run("caption", "--out", str(corpus_dir), "--recipe", str(path), "--quiet")
    assert result.exit_code == 0
    assert "generator   template (offline; no LLM endpoint configured)" in result.output
    assert "captions by generator: template=" in result.output


def test_a_wrong_model_is_one_line_and_exit_1(corpus_dir, llm, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", llm.base_url)
    monkeypatch.setenv("CURATOR_LLM_MODEL", "gpt-nope")
    path = tmp_path / "r.toml"
    path.write_text('name = "t"\nsources = []\n')
    result = run("caption", "--out", str(corpus_dir), "--recipe", str(path), "--quiet")
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: LLM endpoint {llm.base_url.removesuffix('/v1')} does not know model 'gpt-nope'")
    )


def test_a_killed_run_resumes_without_paying_twice(corpus_dir, tmp_path):
    with FakeLLM(api_key=KEY, delay=0.05) as llm:
        jobs = 2 * len(set(sample_triplets(Corpus(str(corpus_dir))).values()))
        path = recipe(tmp_path, llm, concurrency=1)
        env = {**os.environ, "OPENAI_BASE_URL": llm.base_url}
        proc = subprocess.Popen(
            [sys.executable, "-m", "curator", "caption", "--out", str(corpus_dir), "--recipe", str(path), "-q"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        cache = corpus_dir / "cache" / "llm"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(cache.rglob("*.json"))) < 6:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = [p for p in cache.rglob("*.json") if not p.name.startswith(".tmp-")]
        assert 6 <= len(done) < jobs
        paid = llm.calls
        result = CliRunner(env={"OPENAI_BASE_URL": llm.base_url}).invoke(
            main, ["caption", "--out", str(corpus_dir), "--recipe", str(path), "-q"], catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        assert llm.calls - paid == jobs - len(done)
        assert f"{jobs} jobs, {len(done)} cached, 0 failed" in result.output
