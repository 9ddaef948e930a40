"""Real kills of `curator build --out s3://…` on an S3-compatible server on loopback (moto's server mode):
a child SIGKILLed mid-upload of a shard larger than the multipart threshold (its first parts on the
server, no object yet) or after its first blob, re-run, equals an uninterrupted build object for object.

The multipart threshold is fsspec's standard setting (``FSSPEC_S3_DEFAULT_BLOCK_SIZE``, here S3's
smallest part, 5 MiB); one source of incompressible 1024x1024 images makes a ~17 MiB train shard.
"""

from __future__ import annotations

import signal
import sys

import numpy as np
import pytest
from helpers import loopback_s3, timeless
from PIL import Image
from test_kill_stages import Child

BUCKET = "curator-kills"
PART = 5 * 1024**2
IMAGES = 16
# (name, kill point)
POINTS = {
    "mid-upload of a shard": f"write:shards/*.tar:{2 * PART + PART // 2}",  # two parts uploaded, a third buffered
    "after the first blob pack": "commit:blobs/*:1",
    "mid-upload of a blob pack": f"write:blobs/packs/*.tar:{2 * PART + PART // 2}",
}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 for this module, with the AWS_* environment children inherit."""
    # FSSPEC_S3_DEFAULT_BLOCK_SIZE is read by the children's fsspec at import
    env = {"FSSPEC_S3_DEFAULT_BLOCK_SIZE": str(PART)}
    with loopback_s3(BUCKET, "AKIACURATORKILLTEST1", "curator-kill-test-secret", **env) as (_, fs):
        yield fs


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """One class-folders source of noise images (PNG cannot compress them) and a recipe keeping them full size."""
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(11)
    for i in range(IMAGES):
        folder = root / "radiology_ai" / "CT" / "lung" / ("nodule" if i % 2 else "normal")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (1024, 1024), dtype=np.uint8)).save(folder / f"scan{i:02d}.png")
    path = root / "noise.toml"
    path.write_text(
        'name = "noise"\nseed = 3\n'
        f'[[sources]]\nid = "demo_radimagenet"\nroot = "{root}"\nimage = {{ max_side = 1024 }}\n'
        "[split]\nval = 0.0\ntest = 0.0\n[shard]\nmax_samples = 64\n"
    )
    return path


def _build(child: Child, recipe, url: str, kill_at: str | None = None):
    cmd = [sys.executable, "-m", "curator", "build", "--recipe", str(recipe), "--out", url, "-q"]
    return child.run([*cmd, "--executor", "serial"], kill_at=kill_at)


def _objects(fs, prefix: str) -> dict[str, bytes]:
    fs.invalidate_cache()
    return {
        rel: timeless(rel, fs.cat_file(p))
        for p in fs.find(f"{BUCKET}/{prefix}")
        if (rel := p.removeprefix(f"{BUCKET}/{prefix}/")) != "_markers/seal-stamps.json"  # ETags and times
    }


def _uploads(fs, prefix: str) -> list[str]:
    return [u["Key"] for u in fs.list_multipart_uploads(BUCKET) if u["Key"].startswith(f"{prefix}/")]


@pytest.fixture(scope="module")
def reference(s3, recipe, tmp_path_factory):
    child = Child(tmp_path_factory.mktemp("reference"))
    result = _build(child, recipe, f"s3://{BUCKET}/reference")
    assert result.returncode == 0, result.stderr[-2000:]
    objects = _objects(s3, "reference")
    tars = {k: len(v) for k, v in objects.items() if k.endswith(".tar")}
    shards = [k for k in tars if k.startswith("shards/")]
    packs = [k for k in tars if k.startswith("blobs/packs/")]
    assert len(shards) == 1 and len(packs) == 1, tars
    assert min(tars.values()) > 3 * PART, tars  # each a multipart upload of several parts
    return objects


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(POINTS))
def test_an_s3_build_killed_mid_upload_resumes_to_identical_objects(s3, recipe, reference, tmp_path, name):
    prefix = "killed-" + name.replace(" ", "-")
    url = f"s3://{BUCKET}/{prefix}"
    child = Child(tmp_path)
    killed = _build(child, recipe, url, kill_at=POINTS[name])
    assert killed.returncode == -signal.SIGKILL, f"never reached {POINTS[name]}: {killed.stderr[-1500:]}"
    s3.invalidate_cache()
    assert s3.exists(f"{BUCKET}/{prefix}/_lock.json")  # the dead run's lease: the re-run takes it over
    if name.startswith("mid-upload"):
        assert _uploads(s3, prefix), "killed mid-upload, yet no multipart upload under way"
        where = "shards" if "shard" in name else "blobs/packs"
        assert not s3.find(f"{BUCKET}/{prefix}/{where}", withdirs=False), "a half-uploaded object became visible"

    rerun = _build(child, recipe, url)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "taking over a stale lock" in rerun.stderr
    got = _objects(s3, prefix)
    assert sorted(got) == sorted(reference)
    assert [k for k in reference if got[k] != reference[k]] == []
    assert _uploads(s3, prefix) == [], "the killed run's unfinished upload is still on the server"
    assert child.left_behind() == [], "a run left files in the system temp dir or its local scratch"
