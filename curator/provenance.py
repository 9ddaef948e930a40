"""Build provenance: the recipe a corpus was built with, and ``shards/build.json`` beside the shards.

``recipe.json`` (the corpus root) holds the resolved recipe ``curator build`` ran,
written before any stage, so ``curator caption`` and ``curator shard`` without
``--recipe`` use the build's settings instead of defaults. It names the source
roots as this machine resolved them: it is for re-running stages here. Its recipe
name is also the corpus's owner: a build of another recipe into the corpus is
refused unless asked to replace it (:func:`claim_for_recipe`).

``shards/build.json`` says what built the shards a training team receives: the
curator version, the recipe's sha256, every source card's version and sha256,
the libraries that decide the bytes, the manifest's sha256, and when the build
started and finished. It is host-independent (no paths, host or user names;
times in UTC), and it lives outside the tars, so the shards stay byte-identical
from build to build while build.json records each run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from datetime import UTC, datetime
from importlib import metadata

from pydantic import ValidationError

from curator import __version__
from curator.config import Recipe
from curator.errors import CorpusError
from curator.storage import LOCK, SCRATCH, Corpus

RECIPE_FILE = "recipe.json"
RECIPE_KIND = "curator-recipe-v1"
# Where corpora before recipe.json named their owner: read as the owner, removed on the next save.
LEGACY_CLAIM = "_recipe.json"
BUILD_FILE = "shards/build.json"
BUILD_KIND = "curator-build-v1"
# Distributions whose versions decide a corpus's bytes (decoders, encoders, table writers).
LIBRARIES = ("numpy", "pillow", "pydicom", "nibabel", "python-gdcm", "pylibjpeg", "pyarrow", "duckdb", "polars")
# Recipe fields that say where inputs lie on this machine, not what the build does.
LOCAL_PATHS = {"registry": True, "sources": {"__all__": {"root"}}, "holdout": {"hash_lists", "folders"}}


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def recipe_sha256(recipe: Recipe) -> str:
    """The sha256 of the recipe's settings as canonical JSON, local paths left out (same on every host)."""
    settings = recipe.model_dump(mode="json", exclude=LOCAL_PATHS)
    return hashlib.sha256(json.dumps(settings, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def save_recipe(corpus: Corpus, recipe: Recipe) -> None:
    record = {"kind": RECIPE_KIND, "recipe": recipe.model_dump(mode="json")}
    if not corpus.exists(RECIPE_FILE) or _read(corpus, RECIPE_FILE) != record:  # a re-run changes nothing
        corpus.write_json(RECIPE_FILE, record)
    corpus.remove(LEGACY_CLAIM)


def _read(corpus: Corpus, rel: str):
    try:
        return corpus.read_json(rel)
    except ValueError:  # UnicodeDecodeError is one
        return None


def recipe_owner(corpus: Corpus) -> tuple[bool, str | None]:
    """(whether the corpus names an owner, the recipe name it names: None when unreadable)."""
    for rel, name_of in ((RECIPE_FILE, lambda d: d["recipe"]["name"]), (LEGACY_CLAIM, lambda d: d["recipe"])):
        if corpus.exists(rel):
            try:
                name = name_of(_read(corpus, rel))
            except (KeyError, TypeError):
                name = None
            return True, name if isinstance(name, str) else None
    return False, None


def claim_for_recipe(corpus: Corpus, recipe: Recipe, replace: bool = False) -> None:
    """One corpus is one recipe's: a build of another recipe into it is refused unless ``replace``.

    The owner is the recipe ``recipe.json`` names (:func:`save_recipe` writes it when the
    build starts its stages). With ``replace`` the other recipe's corpus is discarded
    first: everything but the writer lock (ours) and the scratch space (this process's).
    """
    claimed, owner = recipe_owner(corpus)
    if not claimed or owner == recipe.name:
        return
    held = f"recipe '{owner}'" if owner else f"a recipe its {RECIPE_FILE} does not name (unreadable)"
    if not replace:
        raise CorpusError(
            f"{corpus.url} holds a build of {held}, not '{recipe.name}': give another --out, or --replace to discard it"
        )
    logging.getLogger(__name__).warning("replacing %s's build of %s with '%s'", corpus.url, held, recipe.name)
    for path in corpus.ls(""):
        if path.rsplit("/", 1)[-1] not in (LOCK, SCRATCH):
            corpus.fs.rm(path, recursive=True)


def stored_recipe(corpus: Corpus) -> Recipe | None:
    """The recipe ``curator build`` last ran on this corpus, or None for a corpus no build wrote."""
    if not corpus.exists(RECIPE_FILE):
        return None
    data = corpus.read_json(RECIPE_FILE)
    if data.get("kind") != RECIPE_KIND:
        raise CorpusError(f"{corpus.url}/{RECIPE_FILE} is not a {RECIPE_KIND} file: pass --recipe")
    try:
        return Recipe.model_validate(data["recipe"])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CorpusError(f"{corpus.url}/{RECIPE_FILE}: {where}: {first['msg']} (pass --recipe)") from None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def build_record(corpus: Corpus, recipe: Recipe, started_at: str, finished_at: str) -> dict:
    """What ``shards/build.json`` holds for a finished build of ``recipe`` into ``corpus``."""
    wanted = {s.id for s in recipe.sources}
    sources = corpus.read_table("sources", ["source_id", "name", "version", "license", "card_sha256"]).to_pylist()
    manifest = corpus.read_json("shards/manifest.json")
    splits: dict[str, int] = {}
    for shard in manifest["shards"]:
        splits[shard["split"]] = splits.get(shard["split"], 0) + shard["nsamples"]
    return {
        "kind": BUILD_KIND,
        "curator_version": __version__,
        "recipe": {"name": recipe.name, "seed": recipe.seed, "sha256": recipe_sha256(recipe)},
        "sources": sorted((s for s in sources if s["source_id"] in wanted), key=lambda s: s["source_id"]),
        "python": platform.python_version(),
        "libraries": {dist: _version(dist) for dist in LIBRARIES},
        "shards": {
            "manifest_sha256": corpus.sha256("shards/manifest.json"),
            "shards": len(manifest["shards"]),
            "samples_per_split": splits,
        },
        "started_at": started_at,
        "finished_at": finished_at,
    }


TIMES = ("started_at", "finished_at")


def write_build_record(corpus: Corpus, recipe: Recipe, started_at: str) -> dict:
    """Write ``shards/build.json``, unless it already says the same but for its times.

    A re-run that changes nothing leaves the record of the build that made these
    shards (and every byte of the corpus) as it was.
    """
    record = build_record(corpus, recipe, started_at, utc_now())
    if corpus.exists(BUILD_FILE):
        earlier = corpus.read_json(BUILD_FILE)
        if without_times(earlier) == without_times(record):
            return earlier
    corpus.write_json(BUILD_FILE, record)
    return record


def without_times(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMES}
