"""The offline generator (templates/v3): diversity on the demo, wording of normal, graded and
structure labels, every label translated, and diversity in the summary and the report."""

from __future__ import annotations

import logging

import polars as pl
import pytest
from helpers import copy_corpus, run

from curator.audit.report import write_report
from curator.llm.diversity import REFERENCE, TARGET_DISTINCT2, distinct, measure, tokens
from curator.llm.offline import TemplateGenerator, Triplet
from curator.llm.prompts import load_prompt
from curator.llm.validate import CaptionValidator
from curator.storage import Corpus

GEN = TemplateGenerator(load_prompt("templates/v3"), seed=3)
EXTRA = [
    Triplet("no finding", "chest", "X-ray"),
    Triplet("no diabetic retinopathy", "eye", "fundus photography"),
    Triplet("moderate non-proliferative diabetic retinopathy", "eye", "fundus photography"),
    Triplet("melanoma", "skin", "dermoscopy"),
    Triplet("3", "knee", "X-ray"),
    Triplet("liver", "abdomen", "CT"),
    Triplet("cancer, liver", "abdomen", "CT"),
    Triplet("emphysema, pneumothorax", "chest", "X-ray"),
    Triplet(None, "unspecified", "MRI"),
    Triplet(None, "mixed", "mixed"),
    Triplet(None, "whole body", "nuclear medicine"),
]


def demo_captions(demo_build) -> pl.DataFrame:
    out, _ = demo_build
    return pl.from_arrow(Corpus(str(out)).read_table("captions"))


def test_the_demo_captions_meet_the_diversity_bar_and_all_pass_validation(demo_build):
    table = demo_captions(demo_build)
    assert set(table["generator"]) == {"template"} and set(table["prompt_id"]) == {"templates/v3"}
    assert set(table["validation"]) == {"ok"}
    by_language = {r["language"]: r for r in measure(table.to_dicts())}
    for language, bar in TARGET_DISTINCT2.items():
        assert by_language[language]["distinct2_within"] >= bar, by_language[language]
    # about as long as UniMed's released captions, and not all one length
    assert abs(by_language["en"]["mean_length"] - REFERENCE["mean_length"]) < 2.5
    assert by_language["en"]["length_sd"] >= 2.5


@pytest.mark.parametrize("triplet", EXTRA, ids=lambda t: f"{t.label}|{t.anatomy}|{t.modality}")
@pytest.mark.parametrize("language", ["en", "zh"])
def test_every_template_caption_passes_every_rule(triplet, language):
    validator = CaptionValidator(triplet.label, triplet.anatomy, triplet.modality, language, GEN.terms(language))
    captions = GEN.captions(triplet, language, 10)
    assert len(captions) == 10
    assert [validator.check(c) for c in captions] == ["ok"] * 10, captions


def test_normal_graded_and_structure_labels_are_worded_as_a_radiologist_would():
    normal = " ".join(GEN.captions(Triplet("no finding", "chest", "X-ray"), "en", 10)).lower()
    assert "no finding" not in normal and "evidence of" not in normal
    assert any(w in normal for w in ("normal", "unremarkable", "no abnormality"))
    zh_normal = GEN.captions(Triplet("no finding", "chest", "X-ray"), "zh", 10)
    assert not any("可见未见" in c or "提示未见" in c for c in zh_normal)
    graded = GEN.captions(Triplet("3", "knee", "X-ray"), "en", 5)
    assert all("grade 3" in c for c in graded) and not any("demonstrates 3" in c for c in graded)
    assert all("3级" in c for c in GEN.captions(Triplet("3", "knee", "X-ray"), "zh", 5))
    liver = GEN.captions(Triplet("liver", "abdomen", "CT"), "en", 5)
    assert all("the liver" in c.lower() for c in liver) and not any("showing liver" in c for c in liver)
    assert all("involving the liver" in c for c in GEN.captions(Triplet("cancer, liver", "abdomen", "CT"), "en", 5))


def test_findings_are_worded_and_ordered_differently_caption_by_caption():
    t = Triplet("atelectasis, cardiomegaly, pleural effusion", "chest", "X-ray")
    captions = GEN.captions(t, "en", 6)
    firsts = {c.lower().split()[0] for c in captions}
    assert len(firsts) >= 4
    v2 = TemplateGenerator(load_prompt("templates/v2"), seed=3).captions(t, "en", 6)
    ours, before = (distinct([tokens(c, "en") for c in caps], 2) for caps in (captions, v2))
    assert ours >= TARGET_DISTINCT2["en"] and ours > before


def test_a_label_without_a_chinese_name_is_a_warning_never_a_mixed_caption(demo_build, caplog):
    from curator.config import CaptionSettings
    from curator.stages.caption import CaptionPlan, _template_rows

    gen = TemplateGenerator(load_prompt("templates/v3"))
    t = Triplet("tetralogy of fallot, cardiomegaly", "chest", "X-ray")
    assert gen.untranslated(t, "zh") == ["tetralogy of fallot"] and gen.captions(t, "zh", 5) == []
    assert len(gen.captions(t, "en", 5)) == 5
    plan = CaptionPlan("template", [t], {}, ["en", "zh"], [], None, gen.model, 0, None, gen)
    with caplog.at_level(logging.WARNING):
        rows = _template_rows(plan, CaptionSettings(captions_per_triplet=5), [(t, "en", 0), (t, "zh", 0)])
    assert {r["language"] for r in rows} == {"en"}
    assert "no zh name for label(s) 'tetralogy of fallot' in curator/vocab.py ZH_NAMES" in caplog.text


def test_distinct_n_counts_unique_ngrams_within_each_text():
    texts = [tokens("Chest radiograph showing effusion.", "en"), tokens("Chest radiograph, effusion.", "en")]
    assert distinct(texts, 1) == 4 / 7 and distinct(texts, 2) == 4 / 5
    assert tokens("胸部CT示T2WI结节", "zh") == ["胸", "部", "CT", "示", "T2WI", "结", "节"]


def test_the_caption_summary_and_the_report_show_diversity_beside_the_reference(demo_build, tmp_path):
    out = copy_corpus(demo_build[0], tmp_path / "corpus")  # the session's demo corpus stays as built
    result = run("caption", "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    assert "diversity: distinct-1/2 within a triplet (in) and across the corpus (all)" in result.output
    assert "UniMed RadImageNet (reference)  en        165      -   0.70      -      -  9.3 words" in result.output
    card = write_report(Corpus(str(out)), tmp_path / "card")
    md = card.markdown.read_text(encoding="utf-8")
    assert "## Caption diversity" in md and "| UniMed RadImageNet (reference) | en | 165 | 1,650 |" in md
    assert "## Caption validation" in md and "| template | en | ok |" in md
