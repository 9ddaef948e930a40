"""Caption calls per 1,000 label-only images: per-triplet jobs against one call per image.

Two corpora: the demo build, and a synthetic CheXpert-sized label table (224,316
chest radiographs, 14 findings at CheXpert's published prevalences, "no finding"
when no pathology is drawn) written as real index tables and read back through
``sample_triplets``. No image is made and nothing is called: the figures come from
the caption plan, which also gives the token estimate of the LLM run.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from curator.config import CaptionSettings, DuplicateSettings, HoldoutSettings, load_recipe
from curator.demo import make_demo_sources, write_demo_recipe
from curator.stages.build import run_build
from curator.stages.caption import plan_captions
from curator.stages.index import run_index
from curator.storage import Corpus

REPO = Path(__file__).resolve().parent.parent
CHEXPERT_IMAGES = 224_316
# Share of CheXpert training images positive for each finding (Irvin et al. 2019, table 1).
PREVALENCE = {
    "enlarged cardiomediastinum": 0.048,
    "cardiomegaly": 0.121,
    "lung opacity": 0.472,
    "lung lesion": 0.041,
    "edema": 0.234,
    "consolidation": 0.066,
    "pneumonia": 0.024,
    "atelectasis": 0.149,
    "pneumothorax": 0.087,
    "pleural effusion": 0.385,
    "pleural abnormality": 0.016,
    "fracture": 0.040,
}
SUPPORT_DEVICES = 0.519
# A placeholder endpoint: plan_captions computes jobs and token estimates without calling it.
PLAN_ONLY = {"base_url": "http://127.0.0.1:9/v1", "model": "planning-only"}


def _synthetic_chexpert(corpus: Corpus, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    names = list(PREVALENCE)
    draws = rng.random((n, len(names))) < np.array([PREVALENCE[k] for k in names])
    devices = rng.random(n) < SUPPORT_DEVICES
    ids = [f"chexpert_synth-{i:016x}" for i in range(n)]
    corpus.write_table(
        "images",
        "synthetic",
        (
            {
                "sample_id": sid,
                "source_id": "chexpert_synth",
                "original_uri": sid,
                "image_sha256": hashlib.sha256(sid.encode()).hexdigest(),
                "phash": f"{int(h):016x}",  # random 64-bit: no near-duplicates among them
                "modality": "X-ray",
                "anatomy": "chest",
                "split": "train",
            }
            for sid, h in zip(ids, rng.integers(0, 2**63, n), strict=True)
        ),
    )

    def labels():
        for i, sid in enumerate(ids):
            found = [names[j] for j in np.flatnonzero(draws[i])] or ["no finding"]
            if devices[i]:
                found.append("support devices")
            for k, label in enumerate(found):
                yield {
                    "annotation_id": f"{sid}-{k}",
                    "sample_id": sid,
                    "kind": "label",
                    "text": label,
                    "value": "positive",
                }

    corpus.write_table("annotations", "synthetic", labels())
    run_index(corpus, DuplicateSettings(), HoldoutSettings())  # caption plans read the index's samples


def _figures(name: str, corpus: Corpus, settings: CaptionSettings) -> list[tuple[str, float, str]]:
    t = time.perf_counter()
    plan = plan_captions(corpus, settings)
    plan_s = time.perf_counter() - t
    images = sum(plan.images.values())
    languages = len(plan.languages)
    per_1k = plan.planned / images * 1000
    findings = {p.strip() for t in plan.triplets if t.label for p in t.label.split(",")}
    return [
        (f"{name}: label-only images", images, "images"),
        (f"{name}: unique triplets (sorted finding sets)", len(plan.triplets), "triplets"),
        (f"{name}: calls/1k images, per triplet x {languages} langs", per_1k, "calls"),
        (f"{name}: calls/1k images, per image x {languages} langs", 1000.0 * languages, "calls"),
        (f"{name}: fewer calls than per image", 1000.0 * languages / per_1k, "x"),
        (f"{name}: calls/1k images, per single finding", len(findings) * languages / images * 1000, "calls"),
        (f"{name}: estimated tokens, whole run", plan.est_prompt_tokens + plan.est_completion_tokens, "tokens"),
        (f"{name}: planning time (triplets, cache lookup)", plan_s, "s"),
    ]


def run(workdir: Path) -> list[tuple[str, float, str]]:
    data = workdir / "data"
    make_demo_sources(data)
    recipe_path = write_demo_recipe(data, workdir)
    recipe = load_recipe(recipe_path)
    run_build(recipe, str(workdir / "demo"), progress=False)
    demo = recipe.caption.model_copy(update=PLAN_ONLY)
    figures = _figures("demo", Corpus(str(workdir / "demo")), demo)

    big = Corpus(str(workdir / "chexpert"))
    t = time.perf_counter()
    _synthetic_chexpert(big, CHEXPERT_IMAGES)
    write_s = time.perf_counter() - t
    figures += _figures("chexpert-224k", big, CaptionSettings(**PLAN_ONLY))
    figures.append(("chexpert-224k: writing the synthetic label table", write_s, "s"))
    return figures
