"""Task-family mixtures in the shard stage (#14 item 4): a named mixture's shards carry the entries its weights pick."""

from __future__ import annotations

import json
import tarfile
from collections import Counter

import pytest
from helpers import copy_corpus

from curator.config import InstructMixture, InstructSettings, Mixture, ShardSettings
from curator.instruct.mixtures import family_counts, family_weights
from curator.stages.shard import run_shard
from curator.storage import Corpus
from curator.tables import connect

SHARES = {"caption": 50.0, "instruction": 30.0, "grounding": 20.0}


def _jsons(root, split: str) -> dict[str, dict]:
    """key -> the sample's .json, over every tar of one split folder."""
    out = {}
    for tar in sorted((root / split).glob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".json"):
                    out[m.name.removesuffix(".json")] = json.loads(tf.extractfile(m).read())
    return out


def _families(samples: dict[str, dict]) -> Counter:
    return Counter(e["family"] for s in samples.values() for e in s["conversations"])


@pytest.fixture(scope="module")
def mixed(demo_build, tmp_path_factory):
    out, _ = demo_build
    copy = copy_corpus(out, tmp_path_factory.mktemp("mix") / "c", done=("ingest", "index", "caption", "instruct"))
    corpus = Corpus(str(copy))
    settings = ShardSettings(mixtures={"stage2": Mixture()})
    instruct = InstructSettings(mixtures={"stage2": InstructMixture(shares=SHARES)})
    result = run_shard(corpus, settings, "demo", progress=False, instruct=instruct)
    return copy, corpus, settings, instruct, result


def test_mixture_conversations_follow_the_family_weights(mixed):
    copy, corpus, settings, _, _ = mixed
    main = _jsons(copy / "shards", "train")
    mix = _jsons(copy / "shards" / "mixtures" / "stage2", "train")
    assert main.keys() == mix.keys() and main
    before, after = _families(main), _families(mix)
    assert after["report"] == 0  # a family without a share is left out
    assert set(after) <= set(SHARES)
    # weights from the corpus's own counts: expected entries = count * weight, drawn per entry
    weights = family_weights(family_counts(connect(corpus, ["instructions", "members"])), SHARES)
    reachable = {f: s for f, s in SHARES.items() if before[f]}
    assert len(reachable) >= 2, before
    total = sum(after.values())
    assert total == pytest.approx(sum(before.values()), rel=0.25)
    for family, share in reachable.items():
        assert after[family] == pytest.approx(before[family] * weights[family], abs=max(3, 0.2 * before[family]))
        assert after[family] / total == pytest.approx(share / sum(reachable.values()), abs=0.1)
    # each sample's picks are its own entries (weights above 1 repeat one), never another sample's
    for key, sample in mix.items():
        own = {json.dumps(e, sort_keys=True) for e in main[key]["conversations"]}
        assert {json.dumps(e, sort_keys=True) for e in sample["conversations"]} <= own
        assert {k: v for k, v in sample.items() if k != "conversations"} == {
            k: v for k, v in main[key].items() if k != "conversations"
        }


def test_val_and_test_keep_every_entry(mixed):
    copy, *_ = mixed
    for split in ("val", "test"):
        main = _jsons(copy / "shards", split)
        mix = _jsons(copy / "shards" / "mixtures" / "stage2", split)
        assert {k: v["conversations"] for k, v in mix.items()} == {k: v["conversations"] for k, v in main.items()}


def test_mixture_shards_are_reproducible_and_the_manifest_sizes_match(mixed, tmp_path):
    copy, corpus, settings, instruct, first = mixed
    again = copy_corpus(copy, tmp_path / "again", done=("ingest", "index", "caption", "instruct"))
    second = run_shard(Corpus(str(again)), settings, "demo", progress=False, instruct=instruct)
    assert not second.skipped
    assert [(s.url, s.sha256) for s in first.shards] == [(s.url, s.sha256) for s in second.shards]
    manifest = corpus.read_table("shards").to_pylist()
    sizes = Counter()
    for row in manifest:
        sizes[row["shard_url"]] += row["bytes"]
    for s in first.shards:  # the sample bytes the manifest records fit the shard (headers, padding, end blocks)
        assert 0 < s.bytes - sizes[s.url] <= 20 * 512, s.url
    # a re-run with the same shares keeps every shard; other shares rewrite the mixture's, not the main set's
    kept = run_shard(corpus, settings, "demo", progress=False, instruct=instruct)
    assert kept.skipped
    other = InstructSettings(mixtures={"stage2": InstructMixture(shares={"caption": 1.0})})
    changed = run_shard(corpus, settings, "demo", progress=False, instruct=other)
    rewritten = {s.url for s in changed.shards if not s.kept}
    assert rewritten and all("/mixtures/stage2/" in u for u in rewritten)
    only = _families(_jsons(copy / "shards" / "mixtures" / "stage2", "train"))
    assert set(only) == {"caption"}
