"""The instruct stage: entries on the real demo build, task rules on hand-made samples, mixtures."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import polars as pl
import pytest
from helpers import copy_corpus, run

from curator.config import InstructMixture, InstructSettings, load_recipe
from curator.errors import RecipeError
from curator.instruct.boxes import BadBox, normalise
from curator.instruct.mixtures import family_weights, plan_mixture, select_entries
from curator.instruct.tasks import Context, Drop, Entry, SampleView, build_entries
from curator.instruct.templates import InstructTemplates
from curator.llm.prompts import prompts_dir
from curator.stages.instruct import entries_by_sample, known_labels, run_instruct, sample_entries
from curator.storage import Corpus


def _entries(out) -> pl.DataFrame:
    return pl.read_parquet(str(out / "index" / "instructions" / "*.parquet"))


def test_every_kept_image_gets_entries_with_their_provenance(demo_build):
    out, report = demo_build
    df = _entries(out)
    kept = pl.read_parquet(str(out / "index" / "samples" / "*.parquet")).filter(pl.col("status") == "keep")
    assert set(df["sample_id"]) == set(kept["sample_id"])
    assert report.instruct.entries == df.height
    assert {"caption", "classification", "grounding", "region", "recognition"} <= set(df["task"])
    sha = hashlib.sha256((prompts_dir() / "instruct" / "v1.toml").read_bytes()).hexdigest()
    templated = df.filter(pl.col("generator") == "template")
    assert set(templated["prompt_id"]) == {"instruct/v1"} and set(templated["prompt_sha256"]) == {sha}
    assert set(df["validation"]) == {"ok"} and df["entry_id"].n_unique() == df.height
    for turns in df["turns"].to_list():
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert all(t["value"].strip() and "<image>" not in t["value"] for t in turns)
    assert set(df["language"]) == {"en", "zh"}


def test_grounding_boxes_are_the_mask_boxes_on_the_0_1000_grid(demo_build):
    out, _ = demo_build
    df = _entries(out).filter(pl.col("task") == "grounding", pl.col("language") == "en")
    images = pl.read_parquet(str(out / "index" / "images" / "*.parquet"))
    notes = pl.read_parquet(str(out / "index" / "annotations" / "*.parquet"))
    assert df.height
    for row in df.iter_rows(named=True):
        (annotation_id,) = json.loads(row["origin"])["annotation_ids"]
        note = notes.filter(pl.col("annotation_id") == annotation_id).row(0, named=True)
        img = images.filter(pl.col("sample_id") == note["sample_id"]).row(0, named=True)
        expected = sorted(
            tuple(normalise([b["x0"], b["y0"], b["x1"], b["y1"]], img["width"], img["height"])) for b in note["boxes"]
        )
        answer = row["turns"][1]["value"]
        found = sorted(tuple(int(v) for v in m.split(", ")) for m in re.findall(r"\[([\d, ]+)\]", answer))
        assert found == expected
        assert all(0 <= v <= 1000 for b in found for v in b)


def test_stats_match_the_table(demo_build):
    out, report = demo_build
    df = _entries(out)
    overall = report.instruct.stats[-1]
    assert overall["source"] == "all" and overall["entries"] == df.height
    assert overall["entries_per_image"] == round(df.height / overall["images"], 2)
    per_image = df.group_by("sample_id").agg(pl.col("task").n_unique())
    assert overall["tasks_per_image"] == round(per_image["task"].sum() / overall["images"], 2)


def test_same_inputs_give_the_same_entries_and_a_rerun_skips(demo_build, demo_recipe_path, tmp_path):
    out, _ = demo_build
    copy = copy_corpus(out, tmp_path / "c", done=("ingest", "index", "caption"))
    corpus = Corpus(str(copy))
    settings = load_recipe(demo_recipe_path).instruct
    for part in corpus.table_parts("instructions"):
        corpus.fs.rm(part)
    first = run_instruct(corpus, settings, progress=False)
    assert not first.skipped
    again = run_instruct(corpus, settings, progress=False)
    assert again.skipped and again.entries == first.entries
    assert _entries(copy).sort("entry_id").equals(_entries(out).sort("entry_id"))
    other = run_instruct(corpus, settings.model_copy(update={"seed": settings.seed + 1}), progress=False)
    assert not other.skipped and not _entries(copy).sort("entry_id").equals(_entries(out).sort("entry_id"))


def test_entries_of_a_sample_come_back_in_order(demo_build):
    out, _ = demo_build
    corpus = Corpus(str(out))
    groups = dict(entries_by_sample(corpus))
    sid = sorted(groups)[0]
    assert sample_entries(corpus, sid) == groups[sid]
    assert [e["entry_index"] for e in groups[sid]] == list(range(len(groups[sid])))
    assert list(groups) == sorted(groups)


def test_cli_prints_the_task_statistics(demo_build, demo_recipe_path):
    out, _ = demo_build
    result = run("instruct", "--out", out, "--recipe", demo_recipe_path, "-q")
    assert result.exit_code == 0, result.output
    assert "tasks/img" in result.output and "IMAX 4.10 tasks and 7.46 entries" in result.output
    assert "(unchanged, skipped)" in result.output


def test_report_shows_tasks_per_image_and_the_task_mix(demo_build, tmp_path):
    from curator.audit.report import write_report

    out, report = demo_build
    card = write_report(Corpus(str(out)), tmp_path / "card")
    text = card.markdown.read_text()
    assert "## Instruction tasks per image" in text and "4.10 tasks and 7.46" in text
    overall = report.instruct.stats[-1]
    assert f"| all | {overall['images']} |" in text
    assert "## Instruction task mix" in text and "| grounding | region | box |" in text


# -- task rules on hand-made samples -------------------------------------------------------


@pytest.fixture(scope="module")
def ctx() -> Context:
    templates = InstructTemplates.load("instruct/v1")
    chest = ["atelectasis", "cardiomegaly", "no finding", "pleural effusion", "pneumonia", "pneumothorax"]
    return Context(
        templates=templates,
        languages=["en", "zh"],
        tasks={"caption", "report", "classification", "vqa", "grounding", "region", "recognition"},
        known_labels=known_labels(templates),
        vocabulary={("src", "X-ray", "chest"): chest},
        captions={},
    )


def _note(kind, text, value=None, payload=None, language=None, boxes=None, n=[0]):  # noqa: B006 (a counter)
    n[0] += 1
    return {
        "boxes": [dict(zip(("x0", "y0", "x1", "y1"), b, strict=True)) for b in boxes] if boxes else None,
        "annotation_id": f"a{n[0]}",
        "source_id": "src",
        "kind": kind,
        "text": text,
        "value": value,
        "native": text,
        "language": language,
        "payload": json.dumps(payload or {}),
    }


def _build(ctx, notes, **kw):
    view = SampleView("s1", "src", "train", kw.get("modality", "X-ray"), "chest", kw.get("plane"), 200, 100, notes)
    items = list(build_entries(view, ctx, np.random.default_rng(0)))
    return [i for i in items if isinstance(i, Entry)], [i for i in items if isinstance(i, Drop)]


def test_bad_input_is_dropped_with_a_reason(ctx):
    notes = [
        _note("label", "pleural effusion", "positive", boxes=[[10, 10, 50, 50], [150, 20, 260, 90]]),
        _note("label", "xyzzy", "positive"),
        _note("vqa", "Is the heart enlarged?", payload={"answer": " "}, language="en"),
    ]
    entries, drops = _build(ctx, notes)
    reasons = sorted(d.reason for d in drops)
    assert reasons == ["box_outside_image", "empty_answer", "unknown_label"]
    grounding = [e for e in entries if e.task == "grounding" and e.language == "en"]
    assert len(grounding) == 1 and "[50, 100, 250, 500]" in grounding[0].turns[0][1]
    assert not any("xyzzy" in q + a for e in entries for q, a in e.turns)


def test_yes_no_questions_are_balanced_and_no_finding_is_an_answer(ctx):
    sick, _ = _build(ctx, [_note("label", "pneumonia", "positive"), _note("label", "atelectasis", "positive")])
    yesno = [e.turns[0][1] for e in sick if e.form == "yesno" and e.language == "en"]
    # two findings -> two "yes", two "no", and "abnormal?" -> yes
    assert sorted(yesno) == ["No.", "No.", "Yes.", "Yes.", "Yes."]
    well, _ = _build(ctx, [_note("label", "no finding", "positive")])
    answers = [(e.form, e.turns[0][1]) for e in well if e.task == "classification" and e.language == "en"]
    assert ("yesno", "No.") in answers  # "does this image show any abnormality?" -> no
    single = [a for f, a in answers if f == "single"]
    assert single and single[0].endswith("no finding.")


def test_single_label_choices_come_from_the_source_vocabulary(ctx):
    entries, _ = _build(ctx, [_note("label", "pneumothorax", "positive")])
    (q,) = [e.turns[0][0] for e in entries if e.form == "single" and e.language == "en"]
    options = [line[3:] for line in q.splitlines() if line[:1] in "ABCD" and line[1:3] == ". "]
    assert len(options) == 4 and "pneumothorax" in options
    assert set(options) <= set(ctx.vocabulary[("src", "X-ray", "chest")])


def test_reports_keep_findings_and_impression_apart_and_vqa_stays_verbatim(ctx):
    notes = [
        _note("report", "FINDINGS: clear lungs.\nIMPRESSION: normal.", language="en"),
        _note("report", "Clear lungs.", payload={"section": "FINDINGS"}, language="en"),
        _note("report", "Normal chest.", payload={"section": "IMPRESSION"}, language="en"),
        _note("vqa", "肺部正常吗？", payload={"answer": "是"}, language="zh"),
        _note("vqa", "What organ is shown?", payload={"answer": "Lungs"}, language="en"),
    ]
    entries, drops = _build(ctx, notes)
    assert not drops
    reports = {e.form: e.turns[0][1] for e in entries if e.task == "report"}
    assert reports == {"findings": "Clear lungs.", "impression": "Normal chest."}
    vqa = {(e.form, e.language, e.generator): e.turns[0] for e in entries if e.task == "vqa"}
    assert vqa == {
        ("closed", "zh", "source"): ("肺部正常吗？", "是"),
        ("open", "en", "source"): ("What organ is shown?", "Lungs"),
    }
    assert not any(e.task == "caption" for e in entries)  # a report image gets no generated caption


def test_recognition_uses_only_metadata_that_says_something(ctx):
    entries, _ = _build(ctx, [], modality="mixed", plane="axial")
    assert sorted({e.form for e in entries}) == ["anatomy", "plane"]
    zh = {e.form: e.turns[0][1] for e in entries if e.language == "zh"}
    assert zh == {"anatomy": "胸部。", "plane": "轴位。"}


def test_boxes_outside_or_without_area_are_refused():
    assert normalise([0, 0, 100, 50], 100, 50) == [0, 0, 1000, 1000]
    assert normalise([-0.3, 0, 50.2, 25], 100, 50) == [0, 0, 502, 500]
    for box in ([0, 0, 101, 50], [-2, 0, 10, 10], [10, 10, 10, 20], [1, 2, 3]):
        with pytest.raises(BadBox):
            normalise(box, 100, 50)


# -- mixtures ------------------------------------------------------------------------------


def test_family_weights_reproduce_the_target_shares():
    counts = {"caption": 500, "instruction": 4000, "report": 100, "grounding": 400}
    shares = {"caption": 33.7, "instruction": 31.8, "report": 4.6, "grounding": 5.0}
    plan = {r["family"]: r for r in plan_mixture(counts, shares)}
    total = sum(shares.values())
    for family, share in shares.items():
        assert plan[family]["percent"] == pytest.approx(100 * share / total, abs=0.1)
    assert sum(r["expected_entries"] for r in plan.values()) == pytest.approx(sum(counts.values()), abs=2)
    weights = family_weights({"caption": 10, "instruction": 0}, {"caption": 1, "instruction": 1})
    assert weights["caption"] == 1.0 and weights["instruction"] == 0.0


def test_select_entries_is_seeded_and_follows_weights():
    entries = [{"family": "caption", "i": i} for i in range(1000)] + [{"family": "report", "i": 0}]
    picked = select_entries(entries, {"caption": 0.3, "report": 2.0}, 7, "stage2", "s1")
    assert picked == select_entries(entries, {"caption": 0.3, "report": 2.0}, 7, "stage2", "s1")
    assert 230 < sum(e["family"] == "caption" for e in picked) < 370
    assert sum(e["family"] == "report" for e in picked) == 2


def test_recipe_mixtures_must_name_shard_mixtures(tmp_path):
    base = 'name = "r"\n[[sources]]\nid = "demo_dicom"\nroot = "."\n'
    bad = tmp_path / "bad.toml"
    bad.write_text(base + "[instruct.mixtures.stage3]\nshares = {caption = 1}\n")
    with pytest.raises(RecipeError, match="not in shard.mixtures: stage3"):
        load_recipe(bad)
    good = tmp_path / "good.toml"
    good.write_text(
        base + "[shard.mixtures.stage3]\n[instruct.mixtures.stage3]\nshares = {caption = 33.7, report = 4.6}\n"
    )
    assert load_recipe(good).instruct.mixtures["stage3"] == InstructMixture(shares={"caption": 33.7, "report": 4.6})
    family = tmp_path / "family.toml"
    family.write_text(base + "[shard.mixtures.s]\n[instruct.mixtures.s]\nshares = {vqa = 1}\n")
    with pytest.raises(RecipeError, match="unknown task famil"):
        load_recipe(family)


@pytest.mark.slow
def test_real_vqa_and_report_layouts_become_vqa_and_report_entries(tmp_path):
    """SLAKE's VQA JSON and Open-i's report XML, through their real adapters, the index and the stage."""
    from fake_trees import BUILDERS

    from curator.config import DuplicateSettings, HoldoutSettings, IngestSettings
    from curator.registry import adapter_class, find_card
    from curator.stages.index import run_index
    from curator.stages.ingest import ingest_source

    corpus = Corpus(str(tmp_path / "corpus"))
    for source_id, layout in (("slake", "image_text"), ("openi", "openi_reports")):
        card, path = find_card(source_id)
        root = tmp_path / source_id
        BUILDERS[layout](adapter_class(layout)(card, root), root)
        ingest_source(corpus, card, path, str(root), IngestSettings(), progress=False)
    run_index(corpus, DuplicateSettings(), HoldoutSettings())
    result = run_instruct(corpus, InstructSettings(), progress=False)
    df = _entries(tmp_path / "corpus")
    vqa = df.filter(pl.col("task") == "vqa")
    pairs = {(r["form"], r["language"], r["turns"][1]["value"]) for r in vqa.iter_rows(named=True)}
    assert ("closed", "en", "yes") in pairs and ("open", "zh", "left lung") in pairs and ("open", "en", "CT") in pairs
    assert set(vqa["generator"]) == {"source"} and vqa["prompt_id"].is_null().all()
    reports = df.filter(pl.col("task") == "report")
    assert sorted(set(reports["form"])) == ["findings", "impression"]
    answers = set(reports["turns"].list.get(1).struct.field("value"))
    assert answers == {"The heart is normal in size.", "No acute disease."}
    assert "empty_answer" not in result.drops  # the adapter already rejected the empty question


def test_a_mixture_gets_its_target_shares_from_the_real_entries(demo_build, tmp_path):
    out, _ = demo_build
    copy = copy_corpus(out, tmp_path / "c", done=("ingest", "index", "caption", "instruct"))
    corpus = Corpus(str(copy))
    shares = {"caption": 33.7, "instruction": 31.8, "report": 4.6, "grounding": 5.0}
    settings = InstructSettings(mixtures={"stage2": InstructMixture(shares=shares)})
    result = run_instruct(corpus, settings, progress=False)
    rows = {r["family"]: r for r in result.mixtures}
    train = _entries(copy).filter(pl.col("split") == "train")
    assert rows["caption"]["entries"] == train.filter(pl.col("family") == "caption").height
    reachable = {f: s for f, s in shares.items() if rows[f]["entries"]}
    assert "report" not in reachable and rows["report"]["note"] == "no entries: share not reachable"
    for family, share in reachable.items():
        assert rows[family]["percent"] == pytest.approx(100 * share / sum(reachable.values()), abs=0.2)
    assert corpus.marker("instruct", "all")["mixtures"] == result.mixtures


def test_generated_caption_entries_use_the_caption_stages_triplets(demo_build):
    from curator.stages.caption import sample_triplets

    out, _ = demo_build
    triplets = sample_triplets(Corpus(str(out)))
    generated = _entries(out).filter(pl.col("form") == "generated")
    assert generated.height
    for row in generated.iter_rows(named=True):
        origin = json.loads(row["origin"])
        assert origin["triplet_id"] == triplets[row["sample_id"]].id
        assert origin["caption_generator"] == "template"


def test_a_language_the_templates_lack_is_one_line(demo_build, tmp_path):
    out, _ = demo_build
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "r"\n[[sources]]\nid = "demo_dicom"\nroot = "."\n[instruct]\nlanguages = ["en", "de"]\n')
    result = run("instruct", "--out", out, "--recipe", recipe)
    assert result.exit_code == 1
    assert result.output.strip() == "error: templates 'instruct/v1' have no language(s) de"


def test_each_shard_sample_carries_its_conversations(demo_build):
    """The sample's .json holds every entry of the instructions table for it, in entry order."""
    import webdataset as wds

    out, _ = demo_build
    want = {sid: [e["entry_id"] for e in entries] for sid, entries in entries_by_sample(Corpus(str(out)))}
    seen = set()
    for tar in sorted((out / "shards").rglob("*.tar")):
        for sample in wds.WebDataset(str(tar), shardshuffle=False):
            record = json.loads(sample["json"])
            got = [e["entry_id"] for e in record.get("conversations") or []]
            assert got == want.get(record["sample_id"], []), record["sample_id"]
            assert all(t["from"] in ("human", "gpt") for e in record["conversations"] for t in e["turns"])
            seen.add(record["sample_id"])
    assert set(want) <= seen and sum(len(v) for v in want.values()) > len(seen)  # every image has several entries
