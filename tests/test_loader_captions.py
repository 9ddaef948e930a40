"""Caption variety: the loader draws one validated caption per sample per epoch, seeded, from the .json."""

from __future__ import annotations

from collections import defaultdict

from curator.loader import Epoch, draw_caption, iterate_records, shard_urls, webdataset, webdataset_loader


def _draws(urls, epoch: Epoch, n_epochs: int, seed: int = 0, num_workers: int = 2) -> list[dict[str, str]]:
    loader = webdataset_loader(urls, batch_size=4, num_workers=num_workers, captions="draw", epoch=epoch, seed=seed)
    out = []
    for e in range(n_epochs):
        epoch.set_value(e)
        out.append({r["key"]: r["text"] for r in iterate_records(loader)})
    return out


def test_each_epoch_draws_from_every_validated_caption_and_repeats_under_its_seed(demo_build):
    out, _ = demo_build
    urls = shard_urls(str(out / "shards"), "train")
    meta = {r["key"]: r["meta"] for r in webdataset(urls)}
    captioned = {k: [c["caption"] for c in m["captions"]] for k, m in meta.items() if m["captions"]}
    assert captioned, "the demo has label-only samples with generated captions"
    epochs = _draws(urls, Epoch(), 12)
    seen = defaultdict(set)
    for drawn in epochs:
        assert set(drawn) == set(meta)  # every sample once per epoch
        for key, text in drawn.items():
            if key in captioned:
                assert text in captioned[key]
                seen[key].add(text)
    # the draw changes between epochs (workers read the shared epoch), and covers the captions
    assert any(len(texts) > 1 for texts in seen.values())
    caps = sum(len(set(c)) for c in captioned.values())
    assert sum(len(texts) for texts in seen.values()) > caps / 2
    # the same seed and epoch give the same draw, whatever the worker count; another seed differs
    assert _draws(urls, Epoch(), 2, num_workers=0) == epochs[:2]
    assert _draws(urls, Epoch(), 1, seed=1)[0] != epochs[0]


def test_samples_without_generated_captions_keep_their_txt(demo_build):
    out, _ = demo_build
    urls = shard_urls(str(out / "shards"), "train")
    plain = {r["key"]: r["text"] for r in webdataset(urls) if not r["meta"]["captions"]}
    drawn = {r["key"]: r["text"] for r in webdataset(urls, captions="draw", epoch=Epoch(3))}
    assert plain and all(drawn[k] == t for k, t in plain.items())


def test_a_language_narrows_the_draw_and_falls_back_to_all():
    meta = {"captions": [{"caption": "a chest film", "language": "en"}, {"caption": "胸片", "language": "zh"}]}
    assert {draw_caption(meta, "k", epoch=e, language="zh") for e in range(20)} == {"胸片"}
    assert {draw_caption(meta, "k", epoch=e) for e in range(20)} == {"a chest film", "胸片"}
    assert draw_caption(meta, "k", epoch=0, language="fr") in {"a chest film", "胸片"}
    assert draw_caption({"captions": []}, "k") is None


def test_wids_never_touches_the_shard_folder_and_draws_captions_too(demo_build, tmp_path):
    import shutil

    from curator.loader import wids_dataset

    out, _ = demo_build
    shards = tmp_path / "shards"
    shutil.copytree(out / "shards", shards)
    before = sorted(p.relative_to(shards) for p in shards.rglob("*"))
    epoch = Epoch()
    ds = wids_dataset(str(shards), "train", captions="draw", epoch=epoch)
    texts = {}
    for e in range(2):
        epoch.set_value(e)
        texts[e] = [ds[i]["text"] for i in range(len(ds))]
    ds.cache.clear()  # every shard leaves the cache (what a long run does to the early ones)
    assert sorted(p.relative_to(shards) for p in shards.rglob("*")) == before
    keys = [ds[i]["key"] for i in range(len(ds))]
    assert texts[0] != texts[1] and len(keys) == len(texts[0])
