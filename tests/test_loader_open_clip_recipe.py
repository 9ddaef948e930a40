"""The README's open_clip recipe for per-epoch caption draws, run on the curator side.

Real webdataset, a real torch DataLoader with two worker processes, torch's
``default_collate``, the shards' ``sizes.json``, and open_clip's epoch protocol:
``DataInfo.set_epoch`` calls ``shared_epoch.set_value`` before each epoch and the
training loop iterates ``(images, texts)`` batches. open_clip itself cannot be
imported here (PyPI's torchvision fails to import beside the pinned CPU torch
2.13.0: 'operator torchvision::nms does not exist'), so its three pieces the
recipe touches are written out below as open_clip defines them: ``DataInfo`` (the
dataclass's set_epoch), the model's preprocess (any PIL -> tensor callable) and
the tokenizer (texts -> a LongTensor). tests/test_open_clip.py runs open_clip's own
``get_wds_dataset`` wherever open_clip imports.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import default_collate

from curator.loader import Epoch, shard_urls, webdataset, webdataset_loader

BATCH = 4


@dataclass
class DataInfo:
    """open_clip_train.data.DataInfo, less its DistributedSampler branch (webdataset splits shards by rank)."""

    dataloader: torch.utils.data.DataLoader
    shared_epoch: Epoch | None = None

    def set_epoch(self, epoch: int) -> None:
        if self.shared_epoch is not None:
            self.shared_epoch.set_value(epoch)


class Vocabulary:
    """A tokenizer that maps each distinct text to one id, so a batch's texts can be read back."""

    def __init__(self, texts):
        self.ids = {t: i for i, t in enumerate(sorted(set(texts)))}
        self.texts = {i: t for t, i in self.ids.items()}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([[self.ids[t], len(t)] for t in texts], dtype=torch.long)


def preprocess_train(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im.resize((32, 32)), dtype=np.float32)).permute(2, 0, 1) / 255


def test_the_readme_open_clip_recipe_draws_a_new_caption_each_epoch(demo_build):
    out, _ = demo_build
    shards = out / "shards"
    records = list(webdataset(shard_urls(str(shards), "train")))
    captions = {r["key"]: [c["caption"] for c in r["meta"]["captions"]] for r in records}
    tokenizer = Vocabulary([r["text"] for r in records] + [c for cs in captions.values() for c in cs])

    # the recipe, as in README.md "open_clip", with the stand-ins above
    def to_pair(rec):
        with Image.open(io.BytesIO(rec["image"])) as im:
            return preprocess_train(im.convert("RGB")), tokenizer([rec["text"]])[0]

    epoch = Epoch()
    urls = shard_urls(str(shards), "train")
    loader = webdataset_loader(
        urls, batch_size=BATCH, num_workers=2, transform=to_pair, collate_fn=default_collate,
        captions="draw", epoch=epoch, seed=0, shardshuffle=100, shuffle=1000, multinode=True,
    )  # fmt: skip
    n_train = sum(json.loads((shards / "train" / "sizes.json").read_text()).values())
    loader.num_samples = n_train
    loader.num_batches = n_train // BATCH
    data = {"train": DataInfo(loader, shared_epoch=epoch)}

    def train_one_epoch(e: int) -> list[str]:  # what open_clip's loop does with `data` each epoch
        data["train"].set_epoch(e)
        texts = []
        for images, tokens in data["train"].dataloader:
            assert images.shape == (tokens.shape[0], 3, 32, 32) and images.dtype == torch.float32
            texts += [tokenizer.texts[int(i)] for i in tokens[:, 0]]
        return texts

    epochs = [train_one_epoch(e) for e in range(4)]
    assert n_train == len(records) and all(len(t) == n_train for t in epochs)  # sizes.json counts what is read
    drawn = defaultdict(set)
    plain = {r["text"] for r in records if not captions[r["key"]]}
    for texts in epochs:
        for t in texts:
            owners = [k for k, cs in captions.items() if t in cs]
            assert owners or t in plain  # a validated caption of some sample, or a source text
            for k in owners:
                drawn[k].add(t)
    assert any(len(v) > 1 for v in drawn.values())  # the draw changed between epochs
    assert sorted(epochs[0]) != sorted(epochs[1])
    assert sorted(train_one_epoch(2)) == sorted(epochs[2])  # an epoch's draw repeats (shuffle order may not)
