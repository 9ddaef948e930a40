"""Build recipes and stage settings (pydantic). Secrets come only from the environment."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, model_validator

from curator.errors import RecipeError
from curator.tomlfile import load_model

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
    # A unit is a source x a batch of items: its parts and marker commit together. 256 CT
    # slices are ~2-3 s of work and ~30 MB of PNG: small enough that a crash or a kill
    # loses little and the pool stays busy to the end, large enough that per-unit costs
    # (three Parquet parts, a marker, a task round trip) stay under 1%. Part of the
    # fingerprint: changing it re-plans the source. Never derived from the worker count.
    unit_items: int = Field(256, ge=1, description="Items (files or table rows) per ingest unit.")

    def patient_key(self) -> bytes:
        return patient_key()

    def fingerprint(self) -> str:
        # The key itself must not be written anywhere; its hash tells a re-run that it changed.
        key_hash = hashlib.sha256(self.patient_key()).hexdigest()[:16]
        return hashlib.sha256((self.model_dump_json() + key_hash).encode()).hexdigest()


class CaptionSettings(Strict):
    """The [caption] table. The endpoint and model may also come from the environment
    (OPENAI_BASE_URL, CURATOR_LLM_MODEL); a value in the recipe wins. The API key is a
    secret and is read only from the environment variable named by ``api_key_env``."""

    captions_per_triplet: int = Field(10, ge=1, le=50, description="Captions written per triplet and language.")
    languages: list[str] = Field(default_factory=lambda: ["en", "zh"])
    prompt: str = Field("caption/v3", description="LLM prompt id: prompts/<id>.toml.")
    templates: str = Field("templates/v3", description="Offline generator templates: prompts/<id>.toml.")
    seed: int = 0
    generator: Literal["auto", "llm", "template"] = Field(
        "auto", description="auto: the LLM when an endpoint is configured, else the offline templates."
    )
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint; default $OPENAI_BASE_URL.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key.")
    model: str | None = Field(None, description="Model name; default $CURATOR_LLM_MODEL, else the endpoint's only one.")
    temperature: float = Field(0.8, ge=0, le=2, description="Sampling temperature; diversity is the point here.")
    # ten two-sentence Chinese captions fit in ~1,200 tokens; a re-ask after a truncated reply doubles it (up to 4x)
    max_tokens: int = Field(2048, ge=64, description="Completion tokens per request.")
    response_format: Literal["auto", "json_schema", "json_object", "none"] = Field(
        "auto",
        description="auto: the caption list's JSON schema (OpenAI, vLLM, llama.cpp enforce it), stepping down to "
        "json_object and then none where the endpoint refuses it with a 400.",
    )
    # A ceiling, not a pace: the pace starts at concurrency_start and grows while the endpoint
    # keeps up (a one-slot llama.cpp server settles at 1-2, a vLLM replica or OpenAI climbs here).
    concurrency: int = Field(16, ge=1, le=256, description="Most requests in flight at once.")
    concurrency_start: int = Field(1, ge=1, le=256, description="Requests in flight at the start (adaptive pace).")
    pace: Literal["adaptive", "fixed"] = Field(
        "adaptive", description="adaptive: learn what the endpoint sustains; fixed: always `concurrency` in flight."
    )
    # counted from when the request leaves, never while it waits for a slot here
    timeout: float = Field(60.0, gt=0, description="Seconds a request may take before it is abandoned and retried.")
    max_retries: int = Field(
        5, ge=0, description="Retries of a request on 408/409/429/5xx, timeouts, lost connections."
    )
    backoff_base: float = Field(
        1.0, ge=0, description="Seconds; delay before retry k is base * 2**k unless Retry-After."
    )
    backoff_max: float = Field(60.0, ge=0, description="Upper bound of one retry delay (also caps Retry-After).")
    max_regenerations: int = Field(2, ge=0, description="Re-asks for captions that failed validation.")
    max_requests: int | None = Field(None, ge=0, description="Cap on requests sent in one run (retries included).")
    max_total_tokens: int | None = Field(None, ge=0, description="Cap on prompt + completion tokens in one run.")
    price_input_per_million: float | None = Field(None, ge=0, description="Price per 1M prompt tokens, for the cost.")
    price_output_per_million: float | None = Field(None, ge=0, description="Price per 1M completion tokens.")
    min_chars: int = Field(8, ge=1, description="Shortest valid caption.")
    max_chars: int = Field(400, ge=1, description="Longest valid caption.")
    fallback: Literal["template", "none"] = Field(
        "template", description="What captions a triplet the LLM could not caption: offline templates, or nothing."
    )


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
    # Images are stored in per-ingest-unit packs. A per-sample shuffle (1) puts every image
    # of a shard in another pack: one ranged GET per image on object storage. Blocks of 32
    # neighbours of one pack cut that ~25x and still give each 256-sample stretch of a
    # shard 8 or more packs (sources), each shard a few hundred, and loaders shuffle
    # shards and a sample buffer on top (WebDataset's shardshuffle + shuffle(n)).
    shuffle_block: int = Field(
        32,
        ge=1,
        description="Samples of one blob pack kept together by the shard shuffle (read with one request); "
        "1: every sample shuffled alone. Shrunk for small shards, so a shard holds at least 16 blocks.",
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


class SelectSettings(Strict):
    """Which sources a build takes, by licence and access class.

    GMAI-VL publishes its openly licensed part apart from the rest; two recipes that
    differ only here build an openly redistributable corpus next to a credentialed one.
    Patterns are shell-style (``CC-BY-*``, ``LicenseRef-*``); an empty include list means any.
    """

    licenses: list[str] = Field(default_factory=list, description="Licence patterns to include (empty: any).")
    exclude_licenses: list[str] = Field(default_factory=list, description="Licence patterns to exclude.")
    access: list[Literal["open", "credentialed", "on-request"]] = Field(
        default_factory=list, description="Access classes to include (empty: any)."
    )
    exclude_access: list[Literal["open", "credentialed", "on-request"]] = Field(
        default_factory=list, description="Access classes to exclude."
    )


class DuplicateSettings(Strict):
    """What the index step does with duplicate images.

    Exact duplicates (same normalised pixels, same ``image_sha256``) always become one
    sample holding every member's annotations and provenance: keeping two copies
    would weight that image twice and let it straddle splits. Near-duplicates
    (64-bit dHash within ``near_threshold`` bits) are a judgement call, so the
    default only flags them; ``drop`` keeps one per cluster (the one in the
    strictest split, so a near copy of a test image leaves training).
    """

    # 2 of 64 bits catches re-encodes, resizes and light crops of one picture; much
    # more and smooth, similar-looking scans (adjacent anatomy, the demo's synthetic
    # images) start to collide. None turns the search off.
    near_threshold: int | None = Field(2, ge=0, le=16, description="Max dHash Hamming distance for near-duplicates.")
    near_action: Literal["flag", "drop"] = Field("flag", description="flag: keep and list them; drop: keep one.")


class HoldoutSettings(Strict):
    """Benchmark images that must not be trained on (GMAI-VL's hash check against benchmarks).

    A hash list holds one sha256 per line (``sha256sum`` output works); a folder holds
    the benchmark's image files. A match by file or pixel hash is excluded from the
    corpus; a perceptual (dHash) match is excluded too unless ``near_action`` is flag.
    """

    hash_lists: list[str] = Field(default_factory=list, description="Files of sha256 hashes, one per line.")
    folders: list[str] = Field(default_factory=list, description="Folders of benchmark images.")
    near_threshold: int | None = Field(2, ge=0, le=16, description="dHash distance for a near match; None: exact only.")
    near_action: Literal["flag", "drop"] = Field("drop", description="What a near match does to a sample.")


INSTRUCT_TASKS = ("caption", "report", "classification", "vqa", "grounding", "region", "recognition")
TASK_FAMILIES = ("caption", "instruction", "report", "grounding")


class InstructMixture(Strict):
    """Target task-family shares of one named shard mixture (GMAI-VL's stage proportions).

    Shares are relative (33.7 / 31.8 / 4.6 or 0.337 / 0.318 / 0.046 alike); a family not
    listed gets none. ``curator.instruct.mixtures`` turns them into a per-family weight
    from the entries each family actually has.
    """

    shares: dict[str, float] = Field(description="task family (caption, instruction, report, grounding) -> share.")

    @model_validator(mode="after")
    def _shares(self):
        unknown = sorted(set(self.shares) - set(TASK_FAMILIES))
        if unknown:
            raise ValueError(f"unknown task famil(ies) {', '.join(unknown)} (known: {', '.join(TASK_FAMILIES)})")
        if any(v < 0 for v in self.shares.values()) or not any(v > 0 for v in self.shares.values()):
            raise ValueError("shares must be >= 0 and at least one above 0")
        return self


REWRITE_TASKS = ("classification", "grounding", "region", "recognition")
TRANSLATE_TASKS = ("caption", "report", "vqa")


class InstructLLMSettings(Strict):
    """The [instruct.llm] table: optional LLM passes over the template entries.

    They go through the [caption] table's endpoint, model, key, pace, caps and retries
    (one endpoint per build) and its response cache in the corpus. Without an endpoint
    they are off, with a warning, and the entries stay templated. Every entry records
    what wrote it: ``generator`` llm, template-fallback (the LLM's reply failed its
    checks, re-asked, and the template answer was kept) or template, with the prompt's
    id and sha256.
    """

    rewrite: bool = Field(False, description="Rewrite template answers into fluent ones (facts kept, checked).")
    rewrite_tasks: list[Literal[REWRITE_TASKS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(REWRITE_TASKS), description="Tasks whose template answers are rewritten."
    )
    # each distinct (question, answer, language) is asked once, so 1.0 costs far fewer calls than entries
    rewrite_fraction: float = Field(1.0, ge=0, le=1, description="Seeded share of eligible entries rewritten.")
    regions: bool = Field(
        False, description="Region entries get an LLM description of the boxed finding (GMAI-VL style)."
    )
    # GMAI-VL translated about 30% of its English texts
    translate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Seeded share of English-only entries (source captions, reports, VQA) also written in Chinese.",
    )
    translate_tasks: list[Literal[TRANSLATE_TASKS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(TRANSLATE_TASKS), description="Tasks whose English entries may be translated."
    )
    rewrite_prompt: str = Field("instruct/rewrite/v1", description="prompts/<id>.toml of the rewrite.")
    region_prompt: str = Field("instruct/region/v1", description="prompts/<id>.toml of region descriptions.")
    translate_prompt: str = Field("instruct/translate/v1", description="prompts/<id>.toml of the translation.")
    # low: a rewrite must keep facts, diversity comes from the templates' variants
    temperature: float = Field(0.3, ge=0, le=2, description="Sampling temperature of these passes.")
    max_tokens: int = Field(512, ge=32, description="Completion tokens per request.")
    max_regenerations: int = Field(1, ge=0, description="Re-asks of a reply that fails its checks.")
    max_chars: int = Field(400, ge=20, description="Longest rewritten answer or region description.")

    @property
    def enabled(self) -> bool:
        return self.rewrite or self.regions or self.translate > 0


class InstructSettings(Strict):
    """The [instruct] table: its presence makes `curator build` run the instruct stage."""

    templates: str = Field("instruct/v1", description="Question/answer templates: prompts/<id>.toml.")
    languages: list[str] = Field(default_factory=lambda: ["en", "zh"], description="Languages of templated tasks.")
    tasks: list[Literal[INSTRUCT_TASKS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(INSTRUCT_TASKS), description="Tasks to write."
    )
    seed: int = 0
    # four options is the MedMCQA / PMC-VQA format; more makes distractors from small vocabularies repeat
    max_options: int = Field(4, ge=2, le=10, description="Options of a single-label multiple-choice question.")
    # per image: half "yes" (present findings), half "no" (balanced negatives)
    max_yesno: int = Field(4, ge=2, description="Yes/no finding questions per image and language.")
    max_regions: int = Field(4, ge=1, description="Region-description entries per label and image (boxes).")
    mixtures: dict[str, InstructMixture] = Field(
        default_factory=dict, description="Named shard mixture -> its task-family shares."
    )
    llm: InstructLLMSettings = Field(
        default_factory=InstructLLMSettings, description="Optional LLM passes: rewrite, regions, translate."
    )


class AuditSettings(Strict):
    """The [audit] table: the LLM-scored audit (`curator audit`), through the [caption] endpoint."""

    per_source: int = Field(30, ge=1, description="Texts scored per source (GMAI-VL scored 30 per dataset).")
    prompt: str = Field("audit/v1", description="Rubric prompt: prompts/<id>.toml.")
    seed: int = 0
    temperature: float = Field(0.0, ge=0, le=2, description="A judge should be repeatable.")
    max_tokens: int = Field(256, ge=32, description="Completion tokens per request.")
    max_regenerations: int = Field(1, ge=0, description="Re-asks of a reply that is not a valid score.")


class RecipeSource(Strict):
    id: str
    root: str = Field(description="The dataset folder as downloaded; relative paths are relative to the recipe.")
    # Overrides without copying the card (NIH's table renamed in a new release, a smaller
    # max_side): validated by the adapter's model like the card, so an unknown key is an error.
    params: dict[str, Any] = Field(default_factory=dict, description="Adapter parameters replacing the card's.")
    image: dict[str, Any] = Field(default_factory=dict, description="Image policy fields replacing the card's.")


class Recipe(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    seed: int = 0
    registry: str | None = Field(
        None, description="Folder of extra source cards, added to (and overriding by id) the shipped source_registry."
    )
    sources: list[RecipeSource]
    split: SplitSettings = Field(default_factory=SplitSettings)
    caption: CaptionSettings = Field(default_factory=CaptionSettings)
    shard: ShardSettings = Field(default_factory=ShardSettings)
    select: SelectSettings = Field(default_factory=SelectSettings)
    duplicates: DuplicateSettings = Field(default_factory=DuplicateSettings)
    holdout: HoldoutSettings = Field(default_factory=HoldoutSettings)
    instruct: InstructSettings | None = Field(None, description="Instruction data; absent: no instruct stage.")
    audit: AuditSettings = Field(default_factory=AuditSettings, description="The LLM-scored audit's settings.")

    @model_validator(mode="after")
    def _instruct_mixtures(self):
        if self.instruct:
            unknown = sorted(set(self.instruct.mixtures) - set(self.shard.mixtures))
            if unknown:
                raise ValueError(f"instruct.mixtures names mixture(s) not in shard.mixtures: {', '.join(unknown)}")
        return self

    @model_validator(mode="after")
    def _known_sources(self):
        ids = [s.id for s in self.sources]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            # one source is one unit of the index: twice would overwrite or double-count it
            raise ValueError(f"source(s) listed more than once: {', '.join(repeated)}")
        known = set(ids)
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
    recipe = load_model(path, Recipe, RecipeError, "recipe")
    base = path.resolve().parent
    for src in recipe.sources:
        root = Path(os.path.expandvars(src.root))
        src.root = str(root if root.is_absolute() else (base / root).resolve())
    recipe.holdout.hash_lists = [_resolve(base, p) for p in recipe.holdout.hash_lists]
    recipe.holdout.folders = [_resolve(base, p) for p in recipe.holdout.folders]
    if recipe.registry:
        reg = Path(os.path.expandvars(recipe.registry))
        recipe.registry = str(reg if reg.is_absolute() else (base / reg).resolve())
    for part in (recipe.caption, recipe.shard, recipe.audit):
        if "seed" not in part.model_fields_set:
            part.seed = recipe.seed
    if recipe.instruct is not None and "seed" not in recipe.instruct.model_fields_set:
        recipe.instruct.seed = recipe.seed
    return recipe


def _resolve(base: Path, value: str) -> str:
    path = Path(os.path.expandvars(value))
    return str(path if path.is_absolute() else (base / path).resolve())
