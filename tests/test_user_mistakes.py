"""Odd inputs and user mistakes: each input accounted for, each mistake one `error:` line and exit 1."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
from fake_trees import write_image
from helpers import run


def ingest_table(root: Path, out: Path, *params: str, path_column: str = "path", label_column: str = "labels"):
    """``curator ingest --adapter label_csv`` on ``root``'s labels.csv, plus extra ``--param``s."""
    args = ["csv=labels.csv", f"path_column={path_column}", f"label_column={label_column}", *params]
    return run(
        "ingest",
        "--adapter",
        "label_csv",
        "--root",
        root,
        "--out",
        out,
        "-q",
        *[x for a in args for x in ("--param", a)],
    )


def one_error_line(result, startswith: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(startswith), result.output
    assert "Traceback" not in result.output


def test_symlinks_are_accounted_for_and_never_escape_the_root(tmp_path):
    root = tmp_path / "src"
    write_image(root / "normal" / "a.png", seed=1)
    write_image(root / "normal" / "b.png", seed=2)
    outside = write_image(tmp_path / "elsewhere" / "secret.png", seed=3)
    os.symlink(root / "normal" / "a.png", root / "normal" / "link_inside.png")
    os.symlink(outside, root / "normal" / "link_outside.png")
    os.symlink(root / "normal" / "gone.png", root / "normal" / "dangling.png")  # inside, but gone
    out = tmp_path / "c"
    result = run("ingest", "--adapter", "class_folders", "--root", root, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    rejects = pl.read_parquet(str(out / "index" / "rejects" / "*.parquet"))
    reasons = dict(zip(rejects["original_uri"], rejects["reason"], strict=True))
    assert reasons == {"normal/link_outside.png": "path_escape", "normal/dangling.png": "missing_file"}
    images = pl.read_parquet(str(out / "index" / "images" / "*.parquet"))
    # the inside link is its own item with its own id (same pixels: the index merges them later)
    assert sorted(images["original_uri"]) == ["normal/a.png", "normal/b.png", "normal/link_inside.png"]
    assert images["sample_id"].n_unique() == 3
    assert "seen" in result.output and " 5 " in result.output.splitlines()[2]


def test_a_missing_subfolder_is_an_error_not_an_empty_source(tmp_path):
    write_image(tmp_path / "x" / "a.png", seed=1)
    result = run(
        "ingest", "--adapter", "class_folders", "--root", tmp_path, "--out", tmp_path / "c", "--param", "subdir=nosuch"
    )
    one_error_line(result, "error: class_folders_")
    assert "folder '" in result.output and "nosuch' not found" in result.output


def test_an_empty_root_is_an_error_and_writes_no_source(tmp_path):
    empty = tmp_path / "download"
    empty.mkdir()
    result = run("ingest", "--source", "fives", "--root", empty, "--out", tmp_path / "c")
    one_error_line(result, "error: source 'fives': no input found under")
    assert "is --root the folder the dataset unpacked to?" in result.output
    assert not list((tmp_path / "c").glob("index/*/*.parquet"))  # no sources row, no marker for it
    assert not (tmp_path / "c" / "_markers" / "ingest" / "fives.json").exists()
    (empty / "Thumbs.db").write_bytes(b"\0")  # only OS metadata is nothing to ingest either
    result = run("ingest", "--source", "fives", "--root", empty, "--out", tmp_path / "c")
    one_error_line(result, "error: source 'fives': no input found under")


def test_a_table_that_is_not_utf8_is_one_line(tmp_path):
    write_image(tmp_path / "img.png", seed=1)
    (tmp_path / "labels.csv").write_bytes("path,labels\nimg.png,Épanchement\n".encode("latin-1"))
    result = ingest_table(tmp_path, tmp_path / "c")
    one_error_line(result, "error: label_csv_")
    assert "not UTF-8" in result.output


@pytest.mark.parametrize("target", ["file", "missing_parent_file"])
def test_an_output_that_cannot_be_written_is_one_line(tmp_path, target):
    write_image(tmp_path / "src" / "normal" / "a.png", seed=1)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    out = blocker if target == "file" else blocker / "sub" / "corpus"
    result = run("ingest", "--adapter", "class_folders", "--root", tmp_path / "src", "--out", out, "-q")
    one_error_line(result, "error: Not a directory")


def test_index_of_a_corpus_that_does_not_exist_is_an_error(tmp_path):
    missing = tmp_path / "nope"
    one_error_line(run("index", "--out", missing), "error: ")
    assert not missing.exists()


def test_a_recipe_listing_a_source_twice_is_refused(demo_recipe_path, tmp_path):
    text = Path(demo_recipe_path).read_text()
    block = '[[sources]]\nid = "demo_dicom"\nroot = "/tmp/other"\n'
    recipe = tmp_path / "twice.toml"
    recipe.write_text(text.replace("[split]", block + "\n[split]", 1))
    one_error_line(run("build", "--recipe", recipe, "--out", tmp_path / "c"), "error: ")
    assert "listed more than once: demo_dicom" in run("build", "--recipe", recipe, "--out", tmp_path / "c").output


@pytest.mark.parametrize("licence", ["GPL-banana", "Foo-1.0", "LicenseRef-"])
def test_a_card_with_an_unknown_licence_is_invalid(tmp_path, licence):
    (tmp_path / "bad_licence.toml").write_text(
        f'id = "bad_licence"\nname = "x"\nversion = "1"\nlicense = "{licence}"\naccess = "open"\n'
        'citation = "x"\nmodality = "CT"\nanatomy = "chest"\ndepartment = "radiology"\n'
        '[adapter]\nname = "class_folders"\n'
    )
    result = run("sources", "validate", "--registry", tmp_path)
    assert result.exit_code == 1 and "unknown licence id(s)" in result.output


def test_validating_an_empty_registry_is_an_error(tmp_path):
    one_error_line(run("sources", "validate", "--registry", tmp_path), "error: no cards (*.toml) in ")


def test_reject_messages_hold_no_absolute_paths(tmp_path):
    root = tmp_path / "src"
    (root / "normal" / "folder.png").mkdir(parents=True)  # a directory named like an image
    write_image(root / "normal" / "a.png", seed=1)
    (root / "labels.csv").write_text("path,labels\nnormal/folder.png,x\nnormal/a.png,y\n")
    out = tmp_path / "c"
    result = ingest_table(root, out)
    assert result.exit_code == 0, result.output
    rejects = pl.read_parquet(str(out / "index" / "rejects" / "*.parquet"))
    assert rejects.height == 1
    assert str(tmp_path) not in rejects["message"][0]


def test_a_searched_image_folder_link_leaving_the_root_is_a_reject(tmp_path):
    """NIH's images_*/images search must not follow a link out of the root (was a traceback)."""
    root = tmp_path / "nih"
    (root / "images_001" / "images").mkdir(parents=True)
    os.symlink(write_image(tmp_path / "elsewhere.png", seed=4), root / "images_001" / "images" / "x.png")
    write_image(root / "images_001" / "images" / "y.png", seed=5)
    (root / "labels.csv").write_text("Image Index,Finding Labels\nx.png,Effusion\ny.png,No Finding\n")
    search = "image_search=images_*/images"
    result = ingest_table(root, tmp_path / "c", search, path_column="Image Index", label_column="Finding Labels")
    assert result.exit_code == 0, result.output
    rejects = pl.read_parquet(str(tmp_path / "c" / "index" / "rejects" / "*.parquet"))
    assert rejects.select("original_uri", "reason").rows() == [("images_001/images/x.png", "path_escape")]


@pytest.mark.parametrize("param", ["csv=/abs/outside.csv", 'csv=["../../x.csv"]', "image_dir=../elsewhere"])
def test_a_parameter_naming_a_path_outside_the_root_is_one_line(tmp_path, param):
    root = tmp_path / "src"
    write_image(root / "img.png", seed=1)
    (root / "labels.csv").write_text("path,labels\nimg.png,a\n")
    result = ingest_table(root, tmp_path / "c", param)
    one_error_line(result, "error: label_csv_")
    assert "resolves outside the source root" in result.output


def test_stages_on_a_missing_corpus_are_one_line_and_leave_nothing_behind(tmp_path):
    missing = tmp_path / "no-corpus"
    for args in (("shard",), ("instruct",), ("caption",), ("index",)):
        result = run(*args, "--out", missing)
        assert result.exit_code == 1, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("error: "), result.output
    assert not missing.exists()
