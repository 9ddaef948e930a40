"""Shared fixtures: the demo sources and one demo build, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from curator.config import load_recipe
from curator.demo import make_demo_sources, write_demo_recipe
from curator.stages.build import run_build

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _clean_environment():
    """A developer's shell must not change what the tests build (an LLM endpoint, another registry)."""
    with pytest.MonkeyPatch.context() as mp:
        for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "CURATOR_LLM_MODEL", "CURATOR_PROMPTS", "CURATOR_REGISTRY"):
            mp.delenv(var, raising=False)
        yield


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo-data")
    make_demo_sources(out)
    return out


@pytest.fixture(scope="session")
def demo_recipe_path(demo_data, tmp_path_factory) -> Path:
    return write_demo_recipe(demo_data, tmp_path_factory.mktemp("recipe"))


@pytest.fixture(scope="session")
def demo_build(demo_recipe_path, tmp_path_factory):
    """(corpus dir, BuildReport) of one demo build."""
    out = tmp_path_factory.mktemp("corpus") / "demo"
    report = run_build(load_recipe(demo_recipe_path), str(out), progress=False)
    return out, report
