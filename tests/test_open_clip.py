"""open_clip's own webdataset pipeline (`get_wds_dataset`) reads the demo shards with no --train-num-samples.

open_clip_torch[training] is not a dev dependency: PyPI's torchvision may not import
beside the pinned CPU torch. The test runs where open_clip imports (a venv with
`pip install -e . 'open_clip_torch[training]'`) and is skipped elsewhere.
"""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
import torch

from curator.loader import read_index

data = pytest.importorskip("open_clip_train.data")  # imports torchvision (for ImageNet), never used below


def _write_sizes_json(shards, split: str) -> int:
    """sizes.json as open_clip reads it: shard file name -> sample count, in the split's folder.

    A stand-in until the shard stage writes sizes.json itself: then drop this and read the stage's.
    """
    entries = read_index(str(shards), split)["shardlist"]
    sizes = {e["url"].rsplit("/", 1)[-1]: e["nsamples"] for e in entries}
    (shards / split / "sizes.json").write_text(json.dumps(sizes))
    return sum(sizes.values())


@pytest.mark.slow
def test_open_clip_get_wds_dataset_reads_the_shards_without_train_num_samples(demo_build, tmp_path):
    out, _ = demo_build
    shards = tmp_path / "shards"
    shutil.copytree(out / "shards", shards)
    total = _write_sizes_json(shards, "train")
    urls = [str(shards / e["url"]) for e in read_index(str(shards), "train")["shardlist"]]

    def preprocess(image):  # any callable PIL -> tensor; open_clip's own transforms need torchvision's ops
        return torch.from_numpy(np.asarray(image.resize((64, 64)), dtype=np.float32)).permute(2, 0, 1) / 255

    def tokenizer(texts):
        return torch.tensor([[len(t)] for t in texts])

    args = argparse.Namespace(
        train_data="::".join(urls),
        train_data_upsampling_factors=None,
        train_num_samples=None,
        val_data=None,
        val_num_samples=None,
        dataset_resampled=False,
        seed=0,
        batch_size=4,
        workers=1,
        world_size=1,
        rank=0,
        distributed=False,
    )
    info = data.get_wds_dataset(args, preprocess, is_train=True, epoch=0, tokenizer=tokenizer)
    assert info.dataloader.num_samples == total
    seen = 0
    for images, texts in info.dataloader:
        assert images.shape[1:] == (3, 64, 64) and texts.shape[0] == images.shape[0]
        seen += images.shape[0]
    assert seen == total  # 36 train samples: whole batches of 4
