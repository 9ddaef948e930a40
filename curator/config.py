"""Build recipes and stage settings (pydantic). Secrets come only from the environment."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import tomllib
from pathlib import Path

from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationError, model_validator

from curator.errors import RecipeError

log = logging.getLogger(__name__)

# Published, therefore not secret: it exists so the demo builds out of the box.
# A real build sets CURATOR_PATIENT_KEY, or anyone holding a patient ID list could
# recompute the keyed hashes.
DEMO_PATIENT_KEY = "curator-demo-key-not-secret"
PATIENT_KEY_ENV = "CURATOR_PATIENT_KEY"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


@functools.cache
def _warn_demo_key() -> None:
    log.warning(
        "%s is not set: patient keys use the public demo key (fine for the demo, not for real data)", PATIENT_KEY_ENV
    )


def patient_key() -> bytes:
    key = os.environ.get(PATIENT_KEY_ENV)
    if not key:
        _warn_demo_key()
        key = DEMO_PATIENT_KEY
    return key.encode()


class SplitSettings(Strict):
    """Fractions for sources without an official split; assignment is by patient (else study, else item)."""

    val: float = Field(0.05, ge=0, lt=1)
    test: float = Field(0.05, ge=0, lt=1)

    @model_validator(mode="after")
    def _sum(self):
        if self.val + self.test >= 1:
            raise ValueError("val + test must be below 1")
        return self


class IngestSettings(Strict):
    seed: int = Field(0, description="Seed for split assignment.")
    split: SplitSettings = Field(default_factory=SplitSettings)

    def patient_key(self) -> bytes:
        return patient_key()

    def fingerprint(self) -> str:
        # The key itself must not be written anywhere; its hash tells a re-run that it changed.
        key_hash = hashlib.sha256(self.patient_key()).hexdigest()[:16]
        return hashlib.sha256((self.model_dump_json() + key_hash).encode()).hexdigest()


class CaptionSettings(Strict):
    captions_per_triplet: int = Field(10, ge=1, le=50, description="Captions written per triplet and language.")
    languages: list[str] = Field(default_factory=lambda: ["en", "zh"])
    prompt: str = Field("caption/v1", description="Prompt id: prompts/<id>.toml.")
    templates: str = Field("templates/v1", description="Offline generator templates: prompts/<id>.toml.")
    seed: int = 0


MIXTURE_NAME = r"^[a-z0-9][a-z0-9_\-]*$"


class Mixture(Strict):
    """Per-source sampling weights for one training stage (GMAI-VL: captions first, instructions later).

    A weight of 2.5 writes every sample of the source twice and a seeded half of
    them a third time; 0.3 keeps a seeded 30%; 0 leaves the source out. A repeat
    gets its own key, ``<sample_id>-r<N>``.
    """

    weights: dict[str, float] = Field(default_factory=dict, description="source_id -> weight (>= 0).")
    default_weight: float = Field(1.0, ge=0, description="Weight of sources not listed in weights.")
    splits: list[str] | None = Field(None, description="Splits to write (default: every split).")

    @model_validator(mode="after")
    def _weights(self):
        for source, weight in self.weights.items():
            if weight < 0:
                raise ValueError(f"weight of '{source}' must be >= 0")
        return self


class ShardSettings(Strict):
    # WebDataset's guidance is 100 MB-1 GB per shard: big enough for sequential
    # reads from object storage, small enough to spread over loader workers.
    max_bytes: ByteSize = Field(
        512 * 1024**2,
        ge=1024,
        description="Target shard size, an int or e.g. '512MiB'; a shard exceeds it only when one sample alone does.",
    )
    max_samples: int = Field(10_000, ge=1, description="Upper bound of samples per shard.")
    multiple_of: int = Field(
        1,
        ge=1,
        description="Make each split's shard count a multiple of this (nodes x GPUs x loader workers); sample "
        "counts per shard then differ by at most one, so no rank runs dry early.",
    )
    txt_language: str = Field("en", description="Language of the caption chosen for .txt when several exist.")
    weights: dict[str, float] = Field(
        default_factory=dict, description="source_id -> weight for the main shard set (default 1 each)."
    )
    # Up-sampling val/test would distort evaluation: weights apply to these splits only.
    weighted_splits: list[str] = Field(default_factory=lambda: ["train"])
    mixtures: dict[str, Mixture] = Field(
        default_factory=dict, description="Named mixtures, each written to shards/mixtures/<name>/."
    )
    seed: int = 0

    @model_validator(mode="after")
    def _check(self):
        for name in self.mixtures:
            if not re.match(MIXTURE_NAME, name):
                raise ValueError(f"mixture name '{name}' must match {MIXTURE_NAME}")
        for source, weight in self.weights.items():
            if weight < 0:
                raise ValueError(f"weight of '{source}' must be >= 0")
        return self

    def all_mixtures(self) -> dict[str | None, Mixture]:
        """The main set (key None, written to shards/) and every named mixture."""
        return {None: Mixture(weights=self.weights), **self.mixtures}


class RecipeSource(Strict):
    id: str
    root: str = Field(description="The dataset folder as downloaded; relative paths are relative to the recipe.")


class Recipe(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    seed: int = 0
    registry: str | None = Field(None, description="Folder of source cards; default: the project's source_registry.")
    sources: list[RecipeSource]
    split: SplitSettings = Field(default_factory=SplitSettings)
    caption: CaptionSettings = Field(default_factory=CaptionSettings)
    shard: ShardSettings = Field(default_factory=ShardSettings)

    @model_validator(mode="after")
    def _known_sources(self):
        known = {s.id for s in self.sources}
        for mixture, weights in [("shard.weights", self.shard.weights)] + [
            (f"shard.mixtures.{n}", m.weights) for n, m in self.shard.mixtures.items()
        ]:
            unknown = sorted(set(weights) - known)
            if unknown:
                raise ValueError(f"{mixture} names source(s) not in the recipe: {', '.join(unknown)}")
        return self

    def ingest_settings(self) -> IngestSettings:
        return IngestSettings(seed=self.seed, split=self.split)


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML: {exc}") from None
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise RecipeError(f"{path}: {loc}: {first['msg']}") from None
    base = path.resolve().parent
    for src in recipe.sources:
        root = Path(os.path.expandvars(src.root))
        src.root = str(root if root.is_absolute() else (base / root).resolve())
    if recipe.registry:
        reg = Path(os.path.expandvars(recipe.registry))
        recipe.registry = str(reg if reg.is_absolute() else (base / reg).resolve())
    for part in (recipe.caption, recipe.shard):
        if "seed" not in part.model_fields_set:
            part.seed = recipe.seed
    return recipe
