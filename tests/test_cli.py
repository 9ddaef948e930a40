"""The CLI: help with examples, one clear line and exit 1 for user mistakes, trace output."""

from __future__ import annotations

import json

import polars as pl
import pytest
from helpers import run

from curator.cli import main


def _commands():
    names = []
    for name, cmd in main.commands.items():
        if hasattr(cmd, "commands"):
            names += [(name, sub) for sub in cmd.commands]
        names.append((name,))
    return names


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c))
def test_every_command_has_help_with_an_example(command):
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output and "curator " in result.output


def test_unknown_source_is_one_line_and_exit_1(tmp_path):
    result = run("ingest", "--source", "no_such_source", "--root", str(tmp_path), "--out", str(tmp_path / "o"))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unknown source 'no_such_source' (known: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_root_folder_is_one_line_and_exit_1(tmp_path):
    missing = tmp_path / "nope"
    result = run("ingest", "--source", "demo_chexpert", "--root", str(missing), "--out", str(tmp_path / "o"))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: source 'demo_chexpert': root folder not found: {missing}"


def test_invalid_card_is_reported_by_validate(tmp_path):
    (tmp_path / "bad_card.toml").write_text('id = "bad_card"\nname = "x"\n')
    (tmp_path / "wrong_adapter.toml").write_text(
        'id = "wrong_adapter"\nname = "x"\nversion = "1"\nlicense = "CC0-1.0"\naccess = "open"\n'
        'citation = "x"\nmodality = "CT"\nanatomy = "chest"\ndepartment = "radiology"\n'
        '[adapter]\nname = "no_such_adapter"\n'
    )
    result = run("sources", "validate", "--registry", str(tmp_path))
    assert result.exit_code == 1
    assert "invalid  " in result.output and "version: Field required" in result.output
    assert "unknown adapter 'no_such_adapter'" in result.output
    assert result.stderr.strip() == "error: 2 of 2 card(s) invalid"


def test_missing_recipe_is_one_line(tmp_path):
    result = run("build", "--recipe", str(tmp_path / "none.toml"), "--out", str(tmp_path / "o"))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: recipe not found: {tmp_path / 'none.toml'}"


def test_sources_list_shows_the_registry():
    result = run("sources", "list")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["ID", "LICENCE", "ACCESS"]
    assert any(line.startswith("demo_dicom ") and "LicenseRef-pydicom-test-data" in line for line in lines)


def test_build_prints_the_summary(demo_recipe_path, tmp_path):
    result = run("build", "--recipe", str(demo_recipe_path), "--out", str(tmp_path / "c"), "--quiet")
    assert result.exit_code == 0
    out = result.output
    assert "demo_dicom" in out and "undecodable_syntax=1" in out
    assert "captions by generator: template=" in out
    assert "shards/train/demo-train-000000.tar" in out
    again = run("build", "--recipe", str(demo_recipe_path), "--out", str(tmp_path / "c"), "--quiet")
    assert again.output.count("(unchanged, skipped)") == 6 + 4  # sources, index, caption, instruct, shard


def test_trace_shows_the_lineage(demo_build):
    out, _ = demo_build
    images = pl.read_parquet(str(out / "index" / "images" / "*.parquet"))
    sid = images.filter(pl.col("source_id") == "demo_chexpert")["sample_id"][0]
    text = run("trace", sid, "--out", str(out))
    assert text.exit_code == 0
    assert f"sample      {sid}" in text.output
    assert "  licence   CC0-1.0  access: open" in text.output
    assert "label_csv v1" in text.output and "shard       shards/" in text.output
    data = json.loads(run("trace", sid, "--out", str(out), "--json").output)
    assert data["source"]["source_id"] == "demo_chexpert"
    assert data["image"]["original_uri"].startswith(("train/", "valid/"))
    assert data["shard"]["members"][1] == f"{sid}.json"
    assert all(c["prompt_sha256"] for c in data["captions"])
    by_url = run("trace", f"{data['shard']['shard_url']}#{sid}", "--out", str(out), "--json")
    assert json.loads(by_url.output)["sample_id"] == sid


def test_trace_unknown_sample(demo_build):
    out, _ = demo_build
    result = run("trace", "demo_dicom-ffffffffffffffff", "--out", str(out))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: sample 'demo_dicom-ffffffffffffffff' is not in ")
