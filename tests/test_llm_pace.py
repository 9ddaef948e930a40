"""Adaptive pace, structured output and bad replies against endpoints that behave like real ones.

The local server (tests/llm_server.py) speaks the OpenAI protocol over HTTP with a given
number of slots, seconds per reply, a queue that answers 429 with Retry-After when full,
and structured output supported or refused.
"""

from __future__ import annotations

import time
from collections import Counter

import polars as pl
import pytest
from helpers import corpus_copies
from llm_server import FakeLLM

from curator.config import CaptionSettings
from curator.stages.caption import run_caption, sample_triplets
from curator.storage import Corpus

KEY = "sk-pace-test"
N = 4


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


@pytest.fixture
def corpora(demo_build, tmp_path):
    """Fresh copies of the demo corpus (ingest and index done), one per call."""
    return corpus_copies(demo_build[0], tmp_path)


def settings(server: FakeLLM, **kw) -> CaptionSettings:
    base = {"base_url": server.base_url, "model": server.model, "captions_per_triplet": N, "backoff_base": 0.001}
    return CaptionSettings(**{**base, **kw})


def table(corpus: Corpus) -> pl.DataFrame:
    return pl.from_arrow(corpus.read_table("captions"))


def jobs(corpus: Corpus, languages: int = 2) -> int:
    return len(set(sample_triplets(corpus).values())) * languages


def llm_complete(corpus: Corpus) -> bool:
    ok = table(corpus).filter((pl.col("validation") == "ok") & (pl.col("generator") == "llm"))
    counts = ok.group_by("triplet_id", "language").len()
    return counts.height == jobs(corpus) and set(counts["len"]) == {N}


@pytest.mark.slow
def test_a_slow_one_slot_endpoint_gets_every_triplet_captioned_without_resends(corpora):
    # main's defaults (8 in flight) against llama.cpp on CPU, scaled: one slot, ~0.5 s a reply,
    # a 3 s timeout. Eight queued replies take 4 s: a fixed pace abandons and re-sends them.
    corpus = corpora()
    with FakeLLM(api_key=KEY, slots=1, delay=0.25, seconds_per_token=0.002, jitter=0.1) as server:
        result = run_caption(corpus, settings(server, timeout=3.0), progress=False)
        planned = jobs(corpus)
        assert result.failed_jobs == 0 and llm_complete(corpus)
        assert server.calls == result.requests and result.requests / planned <= 1.2
        assert server.abandoned == 0 and result.pace.timeouts == 0
        pace = result.pace
        assert pace.max_in_flight <= 3 and pace.sustained <= 2  # found: the endpoint serves one at a time
        assert pace.advice()["concurrency"] <= 2 and pace.advice()["timeout"] <= 10


def test_a_fast_endpoint_is_not_slowed_down(corpora):
    # many slots, 0.3 s a reply: the pace climbs to the ceiling and finishes about as soon as a
    # fixed pace at that ceiling does
    with FakeLLM(api_key=KEY, delay=0.3, jitter=0.1) as server:
        elapsed = {}
        for pace in ("fixed", "adaptive"):
            corpus = corpora()
            start = time.monotonic()
            result = run_caption(corpus, settings(server, pace=pace, concurrency=16, timeout=10.0), progress=False)
            elapsed[pace] = time.monotonic() - start
            # no re-ask; a retry is allowed (a loaded test machine can drop a connection), never a lost job
            assert result.failed_jobs == 0 and result.requests - result.retries == jobs(corpus), result
            assert llm_complete(corpus)
        # it climbed to the ceiling (a loaded test machine may cost it a back-off on the way)
        assert result.pace.max_in_flight == 16, result.pace
        # slow start costs a few round trips (about log2 of the ceiling), nothing more
        assert elapsed["adaptive"] <= 1.25 * elapsed["fixed"] + 8 * 0.3, elapsed


def test_a_full_queue_answers_429_and_the_pace_backs_off_for_retry_after(corpora):
    corpus = corpora()
    with FakeLLM(api_key=KEY, slots=2, max_queue=0, retry_after="0.2", delay=0.05) as server:
        s = settings(server, concurrency_start=8, timeout=3.0, languages=["en"])
        result = run_caption(corpus, s, progress=False)
        assert result.failed_jobs == 0 and result.pace.overloaded >= 1 and result.pace.backoffs >= 1
        assert result.pace.sustained <= 3  # it found the two slots (and a queue of none)
        retried = [r for r in server.requests if r.get("fault") is None and "started" not in r]
        assert len(retried) == result.pace.overloaded  # every 429 was one of these refused requests


@pytest.mark.slow
def test_the_timeout_counts_service_time_not_the_wait_for_a_slot(corpora):
    # 23 jobs one at a time, 0.2 s each: the last waits ~4 s for its slot, the timeout is 0.6 s
    corpus = corpora()
    with FakeLLM(api_key=KEY, slots=1, delay=0.2) as server:
        s = settings(server, pace="fixed", concurrency=1, timeout=0.6, languages=["en"])
        result = run_caption(corpus, s, progress=False)
        assert result.failed_jobs == 0 and result.retries == 0 and result.pace.timeouts == 0
        assert server.calls == jobs(corpus, languages=1)


def test_structured_output_refused_with_400_falls_back_once(corpora):
    corpus = corpora()
    with FakeLLM(api_key=KEY, json_schema=False) as server:
        result = run_caption(corpus, settings(server, languages=["en"]), progress=False)
        formats = [r["format"] for r in server.requests]
        assert formats[0] == "json_schema" and set(formats[1:]) == {"json_object"}
        assert server.calls == jobs(corpus, languages=1) + 1 and result.failed_jobs == 0
        assert result.response_format == "json_object" and llm_complete(corpus) is False  # en only
    with FakeLLM(api_key=KEY) as server:  # a server that takes it keeps it
        run_caption(corpora(), settings(server, languages=["en"]), progress=False)
        assert {r["format"] for r in server.requests} == {"json_schema"}


def test_bad_replies_are_reasked_within_the_budget_then_the_offline_generator_fills_in(corpora):
    corpus = corpora()
    triplets = sorted({t for t in sample_triplets(corpus).values() if t.label}, key=lambda t: t.id)
    hopeless, fenced, short, partial, foreign = triplets[:5]

    def on(t, language="en"):
        return lambda i: i["label"] == t.label and i["anatomy"] == t.anatomy and i["language"] == language

    with FakeLLM(api_key=KEY) as server:
        for kind in ("prose", "refusal", "length"):  # three bad replies: the whole budget
            server.inject(
                kind,
                when=lambda i, kind=kind: on(hopeless)(i) and i["reask"] == ("prose", "refusal", "length").index(kind),
            )
        server.inject("fence", when=on(fenced))
        server.inject("count", missing=2, when=on(short))
        server.inject("count", missing=2, times=3, when=on(partial))
        server.inject("wrong_language", when=on(foreign, "zh"))
        result = run_caption(corpus, settings(server, max_regenerations=2), progress=False)
    rows = table(corpus)

    def of(t, language="en"):
        return rows.filter((pl.col("triplet_id") == t.id) & (pl.col("language") == language))

    bad = of(hopeless)
    assert bad.filter(pl.col("generator") == "llm")["validation"].to_list() == ["prose", "refusal", "truncated"]
    filled = bad.filter(pl.col("generator") == "template")
    assert filled.height == N and set(filled["validation"]) == {"ok"}
    assert set(of(fenced)["generator"]) == {"llm"} and set(of(fenced)["validation"]) == {"ok"}
    assert Counter(of(short).filter(pl.col("validation") == "ok")["generator"]) == {"llm": N}
    # two captions from the LLM, the other two from the offline generator, labelled as such
    part = of(partial).filter(pl.col("validation") == "ok")
    assert Counter(part["generator"]) == {"llm": 2, "template": 2}
    assert Counter(of(foreign, "zh")["validation"]) == {"ok": N, "wrong_language": N}
    assert result.fallback_jobs == 2 and result.failed_jobs == 0
    assert result.requests == jobs(corpus) + 2 + 1 + 2 + 1  # re-asks: hopeless, short, partial, foreign


def test_a_model_the_endpoint_does_not_serve_is_one_line_before_any_call(corpora):
    from curator.errors import CuratorError

    with FakeLLM(api_key=KEY, models=["mock-medical-1", "qwen2.5-7b-instruct"]) as server:
        with pytest.raises(CuratorError) as err:
            run_caption(corpora(), settings(server, model="llama3"), progress=False)
        assert str(err.value) == (
            f"LLM endpoint {server.base_url.removesuffix('/v1')} does not know model 'llama3': it serves "
            "mock-medical-1, qwen2.5-7b-instruct (set caption.model or $CURATOR_LLM_MODEL)"
        )
        assert server.calls == 0 and server.model_listings == 1


def test_a_busy_client_does_not_mistake_its_own_stalls_for_a_queueing_endpoint():
    # The endpoint is fast and never queues (no slot limit, 20 ms a reply); the client's own
    # event loop is what stalls, 150 ms at a time, as when the machine running curator is
    # loaded (other processes, a GIL-bound thread, a CPU-bound step in the loop). Replies wait
    # unread during a stall, so their measured latency rises without any server queue.
    import asyncio

    from curator.llm.client import ChatClient, Endpoint

    async def main(server: FakeLLM) -> ChatClient:
        s = settings(server, concurrency=8, timeout=10.0)
        client = ChatClient(Endpoint(server.base_url, server.model, KEY), s)
        stop = asyncio.Event()

        async def hog():
            while not stop.is_set():
                await asyncio.sleep(0.05)
                time.sleep(0.15)  # the loop cannot run: replies that arrive now wait unread

        hogging = asyncio.create_task(hog())
        messages = [{"role": "user", "content": "Write 1 captions\n- finding: effusion\n- anatomy: chest"}]
        try:
            for _ in range(6):  # rounds of requests, so the pace has time to grow and to react
                await asyncio.gather(*(client.complete(messages, 64, 1) for _ in range(8)))
        finally:
            stop.set()
            await hogging
            await client.close()
        return client

    with FakeLLM(api_key=KEY, delay=0.02) as server:
        client = asyncio.run(main(server))
    stats = client.pace.stats
    assert server.calls == 48 and stats.max_in_flight > 1
    # the stalls are the client's: no backoff for them, and the pace keeps growing towards its ceiling
    # (before the fix: 27 backoffs and a limit of 1; a test machine loaded besides may cost one or two)
    assert stats.backoffs <= 2, stats
    assert client.pace.limit >= 4, stats
