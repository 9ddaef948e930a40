"""Reading curator shards in training: streamed with webdataset, or indexed with wids.

A training job needs only the shard folder (local, or any fsspec URL such as
``s3://bucket/corpus/shards``); nothing here reads the index tables.

    from curator.loader import shard_urls, webdataset_loader
    urls = shard_urls("s3://bucket/corpus/shards", "train")
    loader = webdataset_loader(urls, batch_size=64, num_workers=8)

Remote URLs are opened through fsspec, so credentials and endpoints come from
their standard places (``AWS_*`` environment variables including
``AWS_ENDPOINT_URL``, ``~/.aws``, or fsspec's configuration) and are never
passed around. :func:`register_fsspec` teaches webdataset's ``gopen`` and wids'
downloader every fsspec protocol; the helpers here call it for you.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import multiprocessing
import os
import random
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

import fsspec

log = logging.getLogger(__name__)

# Protocols webdataset/wids handle themselves (or that are local): left alone.
_NATIVE = {"", "file", "pipe", "http", "https"}
# Object-store protocols registered for webdataset's gopen and wids' downloader.
FSSPEC_PROTOCOLS = ("s3", "s3a", "gs", "gcs", "az", "abfs", "memory")
# Read-ahead for streaming a shard: large sequential range requests.
STREAM_BLOCK = 16 * 1024**2


def _gopen_fsspec(url: str, mode: str = "rb", bufsize: int = 8192, **kw):
    fs, path = fsspec.core.url_to_fs(url)
    return fs.open(path, mode, block_size=STREAM_BLOCK)


def _download_fsspec(remote: str, local: str) -> None:
    tmp = f"{local}.part-{os.getpid()}"
    fs, path = fsspec.core.url_to_fs(remote)
    fs.get_file(path, tmp)
    os.replace(tmp, local)


def register_fsspec() -> None:
    """Let ``webdataset.WebDataset`` and ``wids`` open ``s3://`` (and other fsspec) URLs.

    Idempotent. DataLoader workers inherit it when forked; a spawned worker
    imports this module through the dataset's pickled transform and calls it again.
    """
    # importlib: the packages re-export functions under these module names
    gopen = importlib.import_module("webdataset.gopen")
    try:
        wids_dl = importlib.import_module("wids.wids_dl")
    except ImportError:  # webdataset 1.x without the `wids` extra: streaming only
        wids_dl = None
    for proto in FSSPEC_PROTOCOLS:
        gopen.gopen_schemes[proto] = _gopen_fsspec
        if wids_dl is not None:
            wids_dl.default_cmds[proto] = _download_fsspec


def _join(base: str, rel: str) -> str:
    if "://" in rel or rel.startswith(("/", "pipe:")):
        return rel
    return f"{base.rstrip('/')}/{rel}"


def read_index(shards_url: str, split: str) -> dict:
    """The wids shard index (``<split>.wids.json``) of a shard folder, its URLs made absolute."""
    index_url = _join(shards_url, f"{split}.wids.json")
    with fsspec.open(index_url, "rb") as fh:
        index = json.load(fh)
    if index.get("__kind__") != "wids-shard-index-v1":
        raise ValueError(f"{index_url} is not a wids-shard-index-v1 file")
    for entry in index["shardlist"]:
        entry["url"] = _join(shards_url, entry["url"])
    return index


def read_classes(shards_url: str) -> list[str]:
    """The class names of ``.cls``: ``classes[i]`` is the label of class index ``i``."""
    with fsspec.open(_join(shards_url, "classes.json"), "rb") as fh:
        return json.load(fh)["classes"]


def shard_urls(shards_url: str, split: str) -> list[str]:
    """Every shard URL of one split, in index order (webdataset shuffles them itself)."""
    return [e["url"] for e in read_index(shards_url, split)["shardlist"]]


def to_record(sample: dict) -> dict:
    """A raw webdataset/wids sample as plain fields: key, image bytes and format, meta, text, class."""

    def get(ext: str):
        return sample.get(ext, sample.get(f".{ext}"))

    image_ext = "png" if get("png") is not None else "jpg"
    cls = get("cls")
    meta = get("json")
    txt = get("txt")
    return {
        "key": sample["__key__"],
        "image": _bytes(get(image_ext)),
        "image_format": image_ext,
        "meta": meta if isinstance(meta, dict) else json.loads(_bytes(meta)),
        "text": txt if isinstance(txt, str) else _bytes(txt).decode("utf-8"),
        "cls": -1 if cls is None else int(cls if isinstance(cls, int) else _bytes(cls)),
        "url": sample.get("__url__") or sample.get("__shard__"),
    }


def _bytes(value) -> bytes:
    if isinstance(value, bytes):
        return value
    if hasattr(value, "read"):  # wids hands out file-like streams
        value.seek(0)
        return value.read()
    raise TypeError(f"unexpected member type {type(value).__name__}")


class Epoch:
    """The epoch DataLoader workers see: set it before each epoch, as with ``DistributedSampler.set_epoch``.

    Backed by shared memory, so workers (forked or spawned, persistent or not)
    read the current value. open_clip's ``SharedEpoch`` has the same two methods
    and can be passed instead.
    """

    def __init__(self, epoch: int = 0):
        self._value = multiprocessing.Value("i", epoch)

    def set_value(self, epoch: int) -> None:
        self._value.value = epoch

    def get_value(self) -> int:
        return self._value.value


def draw_caption(meta: dict, key: str, *, seed: int = 0, epoch: int = 0, language: str | None = None) -> str | None:
    """One of the sample's validated captions (``.json`` ``captions``), drawn per (seed, epoch, key).

    Each epoch gives each sample an independent, repeatable draw (UniMed-CLIP's
    finding: sampling among a sample's captions beats one fixed caption). With
    ``language``, only captions in it (all of them if it has none). None when the
    sample has no generated captions (its source text is then the ``.txt``).
    """
    captions = meta.get("captions") or []
    if language is not None:
        captions = [c for c in captions if c.get("language") == language] or captions
    if not captions:
        return None
    digest = hashlib.sha256(f"{seed}\0{epoch}\0{key}".encode()).digest()
    return captions[int.from_bytes(digest[:8], "big") % len(captions)]["caption"]


class _Pipeline:
    """Picklable per-sample map: raw sample -> record (caption drawn if asked) -> the caller's transform."""

    def __init__(
        self,
        transform: Callable[[dict], Any] | None,
        captions: str = "txt",
        seed: int = 0,
        epoch: Epoch | None = None,
        language: str | None = None,
    ):
        if captions not in CAPTION_MODES:
            raise ValueError(f"captions must be one of {', '.join(CAPTION_MODES)}, not {captions!r}")
        self.transform = transform
        self.captions = captions
        self.seed = seed
        self.epoch = epoch
        self.language = language

    def __call__(self, sample: dict):
        register_fsspec()  # a spawned worker runs this module fresh
        record = to_record(sample)
        if self.captions == "draw":
            epoch = self.epoch.get_value() if self.epoch is not None else 0
            drawn = draw_caption(record["meta"], record["key"], seed=self.seed, epoch=epoch, language=self.language)
            record["text"] = record["text"] if drawn is None else drawn
        return self.transform(record) if self.transform else record


# txt: the shard's .txt (one seeded caption, fixed); draw: one validated caption per sample per epoch
CAPTION_MODES = ("txt", "draw")


def webdataset(
    urls: str | list[str],
    *,
    transform: Callable[[dict], Any] | None = None,
    shuffle: int = 0,
    shardshuffle: int | bool = False,
    multinode: bool = False,
    seed: int = 0,
    captions: str = "txt",
    epoch: Epoch | None = None,
    caption_language: str | None = None,
):
    """A webdataset pipeline of records (see :func:`to_record`), optionally transformed.

    ``urls`` may be local paths, brace patterns, ``pipe:`` commands or fsspec URLs.
    ``multinode=True`` splits shards over torch.distributed ranks as well as
    loader workers; balanced shard counts (``multiple_of``) keep ranks even.
    ``shardshuffle`` and ``shuffle`` are seeded; ``captions="draw"`` sets each
    record's ``text`` to a caption drawn per epoch (:func:`draw_caption`; pass an
    :class:`Epoch` and set it each epoch).

    Built from webdataset's pipeline stages rather than ``wds.WebDataset``, whose
    arguments differ between 0.2.86 (open_clip's pin) and 1.x: both run this.
    """
    import webdataset as wds

    register_fsspec()
    if shardshuffle is True:
        shardshuffle = 100
    stages: list = [wds.SimpleShardList(urls)]
    if shardshuffle:
        # before the node split and seeded alike on every rank, so ranks split one order
        stages.append(wds.detshuffle(int(shardshuffle), seed=seed))
    stages += [wds.split_by_node if multinode else wds.single_node_only, wds.split_by_worker, wds.tarfile_to_samples()]
    if shuffle:
        stages.append(wds.shuffle(shuffle, rng=random.Random(seed)))
    stages.append(wds.map(_Pipeline(transform, captions, seed, epoch, caption_language)))
    return wds.DataPipeline(*stages)


def _keep_list(batch: list) -> list:
    return batch


# webdataset()'s own options; every other keyword of webdataset_loader goes to the DataLoader
DATASET_OPTIONS = frozenset({"shuffle", "shardshuffle", "multinode", "seed", "captions", "epoch", "caption_language"})


def webdataset_loader(
    urls: str | list[str],
    *,
    batch_size: int = 32,
    num_workers: int = 4,
    transform: Callable[[dict], Any] | None = None,
    collate_fn: Callable | None = None,
    loader_kwargs: dict | None = None,
    **kw,
):
    """A torch DataLoader over :func:`webdataset`; several workers each stream their own shards.

    Without ``collate_fn`` a batch is a list of records (images differ in size
    until a transform resizes them); pass torch's default collate once
    ``transform`` returns tensors of one shape. ``shuffle``, ``shardshuffle``,
    ``multinode``, ``seed``, ``captions``, ``epoch`` and ``caption_language`` go to
    :func:`webdataset`; any other keyword
    (``pin_memory``, ``prefetch_factor``, ``persistent_workers``...) and
    ``loader_kwargs`` go to ``torch.utils.data.DataLoader``.
    """
    from torch.utils.data import DataLoader

    dataset_kw = {k: v for k, v in kw.items() if k in DATASET_OPTIONS}
    options = {k: v for k, v in kw.items() if k not in DATASET_OPTIONS} | dict(loader_kwargs or {})
    remote = any(not _is_local(u) for u in ([urls] if isinstance(urls, str) else urls))
    if num_workers > 0 and remote and "multiprocessing_context" not in options:
        # fsspec's object-store clients run an event-loop thread; a worker forked from a
        # process that has one can crash (seen: SIGSEGV in s3fs). Spawned workers start clean.
        options["multiprocessing_context"] = "spawn"
    return DataLoader(
        webdataset(urls, transform=transform, **dataset_kw),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_fn or _keep_list,
        **options,
    )


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _same_path(url: str) -> str:
    return url


def wids_dataset(
    shards_url: str,
    split: str,
    *,
    cache_dir: str | None = None,
    transform=None,
    captions: str = "txt",
    seed: int = 0,
    epoch: Epoch | None = None,
    caption_language: str | None = None,
):
    """A ``wids.ShardListDataset`` (random access by index) over one split's shard index.

    Local shards are read in place; remote ones are downloaded once into
    ``cache_dir`` (required for remote URLs: wids would otherwise use /tmp).
    Items are records (see :func:`to_record`), transformed if asked; ``captions``,
    ``seed``, ``epoch`` and ``caption_language`` as for :func:`webdataset`.
    """
    try:
        import wids
    except ImportError:
        raise ImportError(
            "wids_dataset needs wids: pip install 'curator[wids]' (webdataset<=0.2.86 ships it instead)"
        ) from None

    register_fsspec()
    index = read_index(shards_url, split)
    remote = any("://" in e["url"] for e in index["shardlist"])
    if remote and cache_dir is None:
        raise ValueError("wids_dataset: cache_dir is required for remote shards")
    links = None
    if remote:
        kw = {"cache_dir": cache_dir}
    elif _links_shards():
        # webdataset<=0.2.86's wids hard-links each shard it opens beside its local name and deletes
        # that name when the shard leaves its cache: the local name must never be the shard itself.
        links = tempfile.TemporaryDirectory(prefix="curator-wids-")
        kw = {"cache_dir": links.name}
    else:
        kw = {"localname": _same_path}
    ds = wids.ShardListDataset(index["shardlist"], dataset_name=index.get("name"), transformations=[], **kw)
    if links is not None:
        ds._curator_links = links  # removed with the dataset
        handlers = ds.cache.downloader.downloader.handlers
        handlers["posixpath"] = handlers["file"] = _symlink  # a local shard is linked to, not copied
    ds.add_transform(_Pipeline(transform, captions, seed, epoch, caption_language))
    return ds


def _links_shards() -> bool:
    """True for the wids that webdataset<=0.2.86 bundles (its downloader links and releases local names)."""
    return hasattr(importlib.import_module("wids.wids_dl"), "ConcurrentDownloader")


def _symlink(remote: str, local: str) -> None:
    os.symlink(os.path.abspath(remote.removeprefix("file://")), local)


def iterate_records(dataset: Iterable) -> Iterable[dict]:
    """Flatten a loader's batches (lists of records) into records."""
    for batch in dataset:
        yield from batch if isinstance(batch, list) else [batch]


# A spawned DataLoader worker unpickles the dataset, importing this module, before it
# opens its first shard: registering here lets it open s3:// (and other fsspec) URLs.
register_fsspec()
