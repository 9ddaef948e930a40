"""What a shard's .txt and .json carry for report and VQA sources (not only captions)."""

from __future__ import annotations

import json
from pathlib import Path

import webdataset as wds
from fake_trees import BUILDERS

from curator.config import CaptionSettings, DuplicateSettings, HoldoutSettings, IngestSettings, ShardSettings
from curator.registry import adapter_class, adhoc_card
from curator.stages.caption import run_caption
from curator.stages.index import run_index
from curator.stages.ingest import ingest_source
from curator.stages.shard import run_shard
from curator.storage import Corpus


def _build(tmp_path: Path, adapter: str, **params) -> list[dict]:
    root = tmp_path / adapter
    root.mkdir()
    card = adhoc_card(adapter, root, source_id=f"t_{adapter}", modality="X-ray", anatomy="chest", params=params)
    BUILDERS[adapter](adapter_class(adapter)(card, root), root)
    card_path = tmp_path / f"{adapter}.json"
    card_path.write_text(card.model_dump_json())
    corpus = Corpus(str(tmp_path / "corpus"))
    ingest_source(corpus, card, card_path, root, IngestSettings(), progress=False)
    run_index(corpus, DuplicateSettings(), HoldoutSettings())
    run_caption(corpus, CaptionSettings(captions_per_triplet=2, generator="template"), progress=False)
    run_shard(corpus, ShardSettings(), "t", progress=False)
    urls = sorted(str(p) for p in (tmp_path / "corpus" / "shards").rglob("*.tar"))
    return [{"json": json.loads(s["json"]), "txt": s["txt"].decode()} for s in wds.WebDataset(urls, shardshuffle=False)]


def test_report_sections_stay_in_json_and_the_whole_report_is_the_txt(tmp_path):
    samples = _build(tmp_path, "image_report", images_dir="files", reports_dir="reports", extensions=[".png"])
    assert samples
    for s in samples:
        reports = [t for t in s["json"]["texts"] if t["kind"] == "report"]
        whole = [t["text"] for t in reports if "payload" not in t]
        sections = {t["payload"]["section"] for t in reports if "payload" in t}
        assert len(whole) == 1 and {"findings", "impression"} <= {x.lower() for x in sections}
        assert s["txt"] == whole[0]


def test_vqa_answers_travel_in_the_json_and_a_question_is_never_the_txt(tmp_path):
    samples = _build(tmp_path, "image_text", tables=["vqa.jsonl"], kind="vqa", answer_column="answer")
    assert samples
    for s in samples:
        vqa = [t for t in s["json"]["texts"] if t["kind"] == "vqa"]
        assert vqa and all(t["payload"].get("answer") for t in vqa)
        assert s["txt"] not in {t["text"] for t in vqa}
        assert s["txt"] in {c["caption"] for c in s["json"]["captions"] if c["language"] == "en"}
