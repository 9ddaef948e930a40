"""LLM captions against a local OpenAI-compatible server with injected faults (tests/llm_server.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
import webdataset as wds
from helpers import copy_corpus
from llm_server import FakeLLM

from curator.config import CaptionSettings, ShardSettings
from curator.errors import CuratorError
from curator.llm.cache import ResponseCache, cache_key
from curator.stages.caption import run_caption, sample_triplets
from curator.stages.shard import run_shard
from curator.storage import Corpus

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-test-0123456789-do-not-leak"
N = 4


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    # conftest clears the developer's OPENAI_* / CURATOR_* variables for the whole session
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


@pytest.fixture
def corpus(demo_build, tmp_path) -> Corpus:
    """A private copy of the demo corpus (index, blobs), captioned afresh by each test."""
    out, _ = demo_build
    dest = copy_corpus(out, tmp_path / "corpus")  # ingest and index done, caption afresh
    return Corpus(str(dest))


@pytest.fixture
def llm():
    with FakeLLM(api_key=KEY) as server:
        yield server


def settings(server: FakeLLM, **kw) -> CaptionSettings:
    base = {
        "base_url": server.base_url,
        "model": server.model,
        "captions_per_triplet": N,
        "backoff_base": 0.001,
        "timeout": 2.0,
        "concurrency": 4,
    }
    return CaptionSettings(**{**base, **kw})


def captions(corpus: Corpus) -> pl.DataFrame:
    return pl.from_arrow(corpus.read_table("captions"))


def jobs(corpus: Corpus, languages: int = 2) -> int:
    return len(set(sample_triplets(corpus).values())) * languages


def test_one_call_per_triplet_and_language_and_a_rerun_calls_nothing(corpus, llm):
    expected = jobs(corpus)
    assert expected < len(sample_triplets(corpus))  # fewer calls than label-only images
    result = run_caption(corpus, settings(llm), progress=False)
    assert llm.calls == expected == result.jobs == result.requests
    assert result.by_generator == Counter({"llm": expected * N}) and result.failed_jobs == 0
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    table = captions(corpus)
    assert set(table["validation"]) == {"ok"} and set(table["generator"]) == {"llm"}
    assert set(table.group_by("triplet_id", "language").len()["len"]) == {N}
    assert set(table["model"]) == {llm.model} and set(table["prompt_id"]) == {"caption/v3"}
    sha = hashlib.sha256((REPO / "prompts" / "caption" / "v3.toml").read_bytes()).hexdigest()
    assert set(table["prompt_sha256"]) == {sha}
    # structured output by default: the caption list's schema, with the count asked for
    formats = [r["body"]["response_format"] for r in llm.requests]
    assert {f["type"] for f in formats} == {"json_schema"}
    assert {f["json_schema"]["schema"]["properties"]["captions"]["maxItems"] for f in formats} == {N}
    assert {r["auth"] for r in llm.requests} == {f"Bearer {KEY}"}

    again = run_caption(corpus, settings(llm), progress=False)
    assert again.skipped and llm.calls == expected
    # without the stage marker the cache still answers everything: same table, zero calls
    corpus.clear_marker("caption", "all")
    third = run_caption(corpus, settings(llm), progress=False)
    assert not third.skipped and third.requests == 0 and llm.calls == expected
    assert (
        captions(corpus)
        .sort("triplet_id", "language", "caption_index")
        .equals(table.sort("triplet_id", "language", "caption_index"))
    )


def test_every_injected_fault_costs_exactly_one_more_request(corpus, llm):
    expected = jobs(corpus)
    # faults only on first asks of labelled chest radiographs, so each costs exactly one request
    first = lambda info: info["reask"] == 0 and info["modality"] == "X-ray" and bool(info["label"])  # noqa: E731
    llm.inject("429", retry_after="0.3", when=first)
    llm.inject("500", retry_after="0.2", when=first)
    llm.inject("timeout", seconds=1.0, when=first)
    content_faults = ["malformed", "count", "contradiction", "wrong_language", "length", "meta"]
    for kind in content_faults:
        # a contradiction is asserted as such only in English: a Chinese caption that names another
        # modality also lacks the finding, and which language's job comes first is up to scheduling
        en_first = lambda info: first(info) and info["language"] == "en"  # noqa: E731
        llm.inject(kind, when=en_first if kind == "contradiction" else first)
    result = run_caption(corpus, settings(llm, timeout=0.4), progress=False)
    assert llm.calls == expected + 3 + len(content_faults) == result.requests
    assert result.retries == 3 and result.failed_jobs == 0
    table = captions(corpus)
    ok = table.filter(pl.col("validation") == "ok")
    assert set(ok.group_by("triplet_id", "language").len()["len"]) == {N}  # every job completed
    assert set(ok["generator"]) == {"llm"}
    reasons = Counter(table.filter(pl.col("validation") != "ok")["validation"])
    assert reasons["malformed_json"] == 1 and reasons["truncated"] == 1 and reasons["meta_text"] == 1
    assert reasons["modality_contradiction"] == 1 and reasons["wrong_language"] == N
    # Retry-After honoured on 429 and 5xx: the retry came that much later (the backoff base is 1 ms)
    for kind, wait in (("429", 0.3), ("500", 0.2)):
        i = next(i for i, r in enumerate(llm.requests) if r["fault"] == kind)
        retry = next(r for r in llm.requests[i + 1 :] if r["body"] == llm.requests[i]["body"])
        assert retry["time"] - llm.requests[i]["time"] >= wait, kind
    # a re-ask continues the conversation and asks only for what is missing
    reasks = [r for r in llm.requests if r["info"]["reask"]]
    assert len(reasks) == len(content_faults)
    assert sorted(r["info"]["asked"] for r in reasks) == sorted([N, 2, 1, N, N, 1])


def test_failures_are_recorded_with_their_reason_and_retried_next_run(corpus, llm):
    triplets = sorted(set(sample_triplets(corpus).values()), key=lambda t: t.id)
    doomed, flawed = triplets[0], triplets[1]
    llm.inject("500", times=10, when=lambda i: i["label"] == doomed.label and i["anatomy"] == doomed.anatomy)
    is_flawed = lambda i: i["label"] == flawed.label and i["language"] == "en"  # noqa: E731
    llm.inject("wrong_language", times=10, when=is_flawed)
    s = settings(llm, max_retries=1, max_regenerations=1, concurrency=2)
    result = run_caption(corpus, s, progress=False)  # no exception: failures are data
    assert result.failed_jobs == 2  # both languages of the doomed triplet
    table = captions(corpus)
    dead = table.filter(pl.col("triplet_id") == doomed.id)
    assert set(dead.filter(pl.col("generator") == "llm")["validation"]) == {"request_failed:500"}
    fallback = dead.filter(pl.col("generator") == "template")
    assert fallback.height == 2 * N and set(fallback["validation"]) == {"ok"}
    bad = table.filter((pl.col("triplet_id") == flawed.id) & (pl.col("language") == "en"))
    assert bad.filter(pl.col("generator") == "llm")["validation"].to_list() == ["wrong_language"] * (2 * N)
    assert set(bad.filter(pl.col("generator") == "template")["validation"]) == {"ok"}
    assert corpus.marker("caption", "all") is None  # incomplete: the next run must not skip

    llm.clear_faults()
    before = llm.calls
    again = run_caption(corpus, settings(llm), progress=False)
    # only the two failed jobs are asked again; the flawed one was answered, so it is cached
    assert llm.calls - before == 2 == again.requests and again.failed_jobs == 0
    assert set(captions(corpus).filter(pl.col("triplet_id") == doomed.id)["generator"]) == {"llm"}
    assert corpus.marker("caption", "all") is not None


def test_a_request_cap_stops_calls_and_the_next_run_resumes(corpus, llm):
    expected = jobs(corpus)
    result = run_caption(corpus, settings(llm, max_requests=7, concurrency=1), progress=False)
    assert llm.calls == 7 and result.failed_jobs == expected - 7
    assert Counter(captions(corpus)["validation"])["cap_reached:requests"] == expected - 7
    resumed = run_caption(corpus, settings(llm), progress=False)
    assert llm.calls == expected and resumed.cached_jobs == 7 and resumed.failed_jobs == 0


def test_a_new_prompt_version_regenerates_only_what_it_changes(corpus, llm, tmp_path, monkeypatch):
    prompts = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", prompts)
    v3 = (prompts / "caption" / "v3.toml").read_text(encoding="utf-8")
    v4 = v3.replace('id = "caption/v3"', 'id = "caption/v4"').replace("不要编号，不要加引号。", "不要编号。")
    assert v4.count("caption/v4") == 1 and '不要编号。"' in v4
    (prompts / "caption" / "v4.toml").write_text(v4, encoding="utf-8")
    monkeypatch.setenv("CURATOR_PROMPTS", str(prompts))
    run_caption(corpus, settings(llm), progress=False)
    assert llm.calls == jobs(corpus)
    run_caption(corpus, settings(llm, prompt="caption/v4"), progress=False)
    assert llm.calls == jobs(corpus) + jobs(corpus, languages=1)  # the Chinese half only
    table = captions(corpus)
    assert set(table.filter(pl.col("language") == "en")["prompt_id"]) == {"caption/v3"}
    assert set(table.filter(pl.col("language") == "zh")["prompt_id"]) == {"caption/v4"}


def test_openai_base_url_alone_switches_to_the_llm(corpus, llm, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", llm.base_url)
    result = run_caption(corpus, CaptionSettings(captions_per_triplet=N, backoff_base=0.001), progress=False)
    assert result.generator == "llm" and result.model == llm.model and llm.model_listings == 1
    assert llm.calls == jobs(corpus)
    forced = run_caption(corpus, CaptionSettings(captions_per_triplet=N, generator="template"), progress=False)
    assert forced.by_generator.keys() == {"template"} and llm.calls == jobs(corpus)


def test_fatal_endpoint_errors_stop_with_one_clear_error(corpus, llm):
    with pytest.raises(CuratorError, match=r"does not know model 'no-such-model': it serves mock-medical-1 \(set"):
        run_caption(corpus, settings(llm, model="no-such-model"), progress=False)
    assert llm.calls == 0  # said before any chat request
    closed = FakeLLM()  # bound, never started: nothing answers
    url = closed.base_url
    closed._server.server_close()
    with pytest.raises(CuratorError, match="cannot reach the LLM endpoint http://127.0.0.1"):
        run_caption(corpus, settings(llm, base_url=url, max_retries=1), progress=False)


def test_secrets_are_never_written(corpus, llm):
    run_caption(corpus, settings(llm), progress=False)
    run_shard(corpus, ShardSettings(max_samples=16), "t", progress=False)
    root = Path(corpus.root)
    written = [p for p in root.rglob("*") if p.is_file()]
    assert any("cache" in p.parts for p in written)
    for path in written:
        data = path.read_bytes()
        if path.suffix == ".parquet":
            data = json.dumps(pl.read_parquet(path).to_dicts(), default=str).encode()
        assert KEY.encode() not in data and b"Bearer" not in data, path


def test_shards_carry_every_caption_of_the_triplet_and_one_seeded_txt(corpus, llm):
    run_caption(corpus, settings(llm), progress=False)
    shard_settings = ShardSettings(max_samples=16, seed=7)
    result = run_shard(corpus, shard_settings, "t", progress=False)
    triplets = sample_triplets(corpus)
    ok = captions(corpus).filter(pl.col("validation") == "ok")
    by_triplet = {k[0]: set(g["caption"]) for k, g in ok.group_by("triplet_id")}
    en = {k[0]: set(g["caption"]) for k, g in ok.filter(pl.col("language") == "en").group_by("triplet_id")}
    urls = [corpus.uri(s.url) for s in result.shards]
    txt = {}
    for sample in wds.WebDataset(urls, shardshuffle=False):
        meta = json.loads(sample["json"])
        key = sample["__key__"]
        if key not in triplets:
            continue
        tid = triplets[key].id
        assert {c["caption"] for c in meta["captions"]} == by_triplet[tid]
        assert {c["generator"] for c in meta["captions"]} == {"llm"}
        assert {c["language"] for c in meta["captions"]} == {"en", "zh"}
        assert sample["txt"].decode() in en[tid]
        txt[key] = sample["txt"]
    assert len(txt) == len(triplets)
    # the .txt choice is seeded: a rebuild picks the same captions, another seed picks others
    for path in Path(corpus.root, "shards").rglob("*.tar"):
        path.unlink()
    corpus.clear_marker("shard", "all")
    run_shard(corpus, shard_settings, "t", progress=False)
    again = {s["__key__"]: s["txt"] for s in wds.WebDataset(urls, shardshuffle=False)}
    assert all(again[k] == v for k, v in txt.items())


def test_json_schema_mode_sends_the_pydantic_schema(corpus, llm):
    result = run_caption(corpus, settings(llm, response_format="json_schema", languages=["en"]), progress=False)
    assert result.failed_jobs == 0 and llm.calls == jobs(corpus, languages=1)
    fmt = llm.requests[0]["body"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["required"] == ["captions"] and schema["additionalProperties"] is False


def test_concurrency_is_bounded(corpus):
    with FakeLLM(api_key=KEY, delay=0.03) as server:
        run_caption(corpus, settings(server, concurrency=3, pace="fixed"), progress=False)
        assert server.max_in_flight == 3 and server.calls == jobs(corpus)


def test_the_cache_works_on_any_fsspec_filesystem():
    corpus = Corpus("memory://cache-test")
    cache = ResponseCache(corpus)
    key = cache_key([{"role": "user", "content": "x"}], "m", {"n": 1})
    assert key not in cache and cache.get(key) is None
    cache.put(key, {"attempts": []})
    corpus.write_bytes(f"cache/llm/{key[:2]}/.tmp-abc-{key}.json", b"{")  # a write cut short
    fresh = ResponseCache(corpus)
    assert fresh.keys() == {key} and fresh.get(key)["attempts"] == []
    assert cache_key([{"role": "user", "content": "y"}], "m", {"n": 1}) != key
