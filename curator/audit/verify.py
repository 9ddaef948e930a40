"""verify: do shards, manifest and index agree? Optionally, are the original files unchanged?

Checks, each a kind of :class:`Problem`:

* every shard the manifest lists exists, and its sha256, size and md5 (wids
  index) match what was recorded when it was written (``shard_missing``,
  ``shard_hash``, ``shard_size``, ``wids_entry``);
* inside each shard, the members are exactly the manifest's, every image member
  hashes to its sample's ``image_sha256``, and every ``.json`` names its own
  sample (``member_missing``, ``member_unexpected``, ``image_hash``, ``json_mismatch``);
* manifest and index agree both ways: each manifest row is a kept sample in the
  same split, each kept sample is in the manifest, each image row belongs to a
  sample and each member to an image row (``manifest_orphan``, ``not_sharded``,
  ``split_mismatch``, ``image_without_sample``, ``member_without_image``);
* what training readers open is complete: every shard of the table is listed in
  its folder's ``manifest.json`` and in its split's ``<split>.wids.json``, each
  split's wids list names exactly the table's shards, ``classes.json`` exists
  per shard folder and each ``.cls`` names one of the sample's positive labels,
  and no ``.tar`` lies in a shard folder without rows in the table
  (``manifest_entry_missing``, ``wids_missing``, ``wids_entry_missing``,
  ``wids_orphan``, ``classes_missing``, ``cls_mismatch``, ``shard_unexpected``);
* the files other tools read beside the shards agree with the table: each split
  folder's ``sizes.json`` (``sizes_missing``, ``sizes_entry``), each shard's
  ``_stats.json`` (``stats_missing``, ``stats_mismatch``), ``classnames.txt`` beside
  ``classes.json`` (``classnames_missing``, ``classnames_mismatch``);
* every kept sample's blob (what the sharder copies) exists and hashes to its
  ``image_sha256``; each pack is streamed once against its ``blob_packs`` rows, and
  packs or files under ``blobs/`` nothing names are flagged (``blob_missing``,
  ``blob_hash``, ``blob_index``, ``pack_member_unexpected``, ``pack_orphan``, ``blob_orphan``);
* kept samples the main set leaves out on purpose (a source weight below 1, as
  ``shards/left_out.json`` records) do not count as ``not_sharded``;
* with source roots given, every original file re-hashes to ``original_sha256``
  (``original_missing``, ``original_changed``).

Shards are read once each, streaming: hashing and tar parsing share one pass.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tarfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
from tqdm import tqdm

from curator import phi
from curator.adapters.base import sha256_file
from curator.blobs import PACKS, blob_ext, blob_path
from curator.errors import CorpusError
from curator.layout import CLASSNAMES_FILE, LEFT_OUT, SIZES_FILE, mixture_root, stats_path
from curator.storage import SEAL, Corpus, damaged_parts, read_seal, sealed_files
from curator.tables import batches, connect

IMAGE_EXTS = ("png", "jpg", "jpeg")


@dataclass(frozen=True)
class Problem:
    kind: str
    subject: str
    detail: str


@dataclass
class VerifyResult:
    problems: list[Problem] = field(default_factory=list)
    shards: int = 0
    samples: int = 0
    originals: int = 0
    hashes: dict[str, str] = field(default_factory=dict)  # files already hashed (shards), for the seal

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, subject: str, detail: str) -> None:
        self.problems.append(Problem(kind, subject, detail))


class _HashingReader:
    """A read-only file wrapper that hashes what passes through it."""

    def __init__(self, fh):
        self.fh = fh
        self.sha = hashlib.sha256()
        self.md5 = hashlib.md5()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.sha.update(data)
        self.md5.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def verify(corpus: Corpus, roots: dict[str, Path] | None = None, progress: bool = True) -> VerifyResult:
    """Every check below; each difference is one :class:`Problem`, never an exception."""
    if not corpus.table_parts("shards"):
        raise CorpusError(f"{corpus.url} has no shard manifest: run `curator build` (or `curator shard`) first")
    result = VerifyResult()
    damaged = _check_parts(corpus, result)
    if damaged:
        result.add("index_unchecked", "index", f"{damaged} unreadable table part(s): delete or re-ingest, then verify")
    else:
        try:
            _check_contents(corpus, roots, progress, result)
        except duckdb.Error as exc:
            result.add("index_unreadable", "index", str(exc).splitlines()[0])
    _check_seal(corpus, result, progress)
    return result


def _check_contents(corpus: Corpus, roots: dict[str, Path] | None, progress: bool, result: VerifyResult) -> None:
    con = connect(corpus)
    # One manifest.json and one wids index per split for the main set (shards/) and for
    # each named mixture (shards/mixtures/<name>/); their URLs are relative to their folder.
    manifest: dict[str, dict] = {}
    wids: dict[str, dict] = {}
    wids_files: dict[str, set[str]] = {}  # <root>/<split>.wids.json -> shard URLs it lists
    classes: dict[str, list[str]] = {}  # root -> classes.json's class list
    tars: set[str] = set()
    sizes: dict[str, dict] = {}  # split folder -> its sizes.json
    classnames: dict[str, list[str]] = {}  # root -> classnames.txt's lines
    stats: set[str] = set()
    if not corpus.exists("shards/manifest.json"):
        result.add("manifest_missing", "shards/manifest.json", "the shard list is missing")
    for path in corpus.find("shards"):
        rel = corpus.rel(path)
        folder = rel.rpartition("/")[0]
        try:
            if rel.endswith("/manifest.json"):
                manifest.update({f"{folder}/{s['url']}": s for s in corpus.read_json(rel)["shards"]})
            elif rel.endswith(".wids.json"):
                entries = {f"{folder}/{e['url']}": e for e in corpus.read_json(rel)["shardlist"]}
                wids.update(entries)
                wids_files[rel] = set(entries)
            elif rel.endswith("/classes.json"):
                classes[folder] = list(corpus.read_json(rel).get("classes") or [])
            elif rel.endswith(".tar"):
                tars.add(rel)
            elif rel.endswith(f"/{SIZES_FILE}"):
                sizes[folder] = corpus.read_json(rel)
            elif rel.endswith(f"/{CLASSNAMES_FILE}"):
                classnames[folder] = corpus.read_bytes(rel).decode().splitlines()
            elif rel.endswith("_stats.json"):
                stats.add(rel)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            result.add("json_unreadable", rel, f"not the JSON a training reader expects ({type(exc).__name__}: {exc})")

    # Per shard, never per sample: counts and the table's hash here; each shard's rows are
    # streamed beside its tar below, so verify holds one shard's keys at a time.
    by_shard: dict[str, int] = {}  # shard URL -> rows in the shards table
    recorded: dict[str, str] = {}
    placed: dict[str, str] = {}  # shard URL -> the wids index that must list it
    splits: dict[str, str] = {}
    for url, sha, n, mixture, split in con.execute(
        "SELECT shard_url, arg_max(shard_sha256, sample_id), count(*), arg_max(mixture, sample_id), "
        "arg_max(split, sample_id) FROM shards GROUP BY shard_url ORDER BY shard_url"
    ).fetchall():
        by_shard[url] = n
        recorded[url] = sha
        placed[url] = f"{mixture_root(mixture)}/{split}.wids.json"
        splits[url] = split
    for url in sorted(set(manifest) - set(by_shard)):
        result.add("manifest_orphan", url, "listed in manifest.json but has no rows in the shards table")
    for url in sorted(tars - set(by_shard)):
        result.add("shard_unexpected", url, "a .tar in a shard folder with no rows in the shards table")
    _check_listings(by_shard, placed, wids_files, classes, result)
    _check_reader_files(corpus, by_shard, recorded, sizes, classnames, stats, classes, result)

    bar = tqdm(total=len(by_shard), desc="verify shards", unit="shard", disable=None if progress else True)
    for url, samples, image_sha in _shard_rows(con):
        result.shards += 1
        _check_shard(
            corpus,
            url,
            samples,
            recorded[url],
            manifest.get(url),
            wids.get(url),
            image_sha,
            result,
            classes.get(url.rpartition("/")[0].rpartition("/")[0]),
            splits[url],
        )
        bar.update()
    bar.close()

    try:
        left_out = {e["sample_id"] for e in corpus.read_json(LEFT_OUT)["samples"]} if corpus.exists(LEFT_OUT) else set()
    except (ValueError, KeyError, TypeError) as exc:
        result.add("json_unreadable", LEFT_OUT, f"unreadable ({type(exc).__name__}: {exc})")
        left_out = set()
    _check_index(con, result, left_out)
    _check_blobs(corpus, con, result, progress)
    if roots:
        _check_originals(con, roots, result, progress, corpus.url)


def _check_parts(corpus: Corpus, result: VerifyResult) -> int:
    """Every Parquet part reads, page by page; the count of those that do not."""
    damaged = damaged_parts(corpus)
    for rel, why in damaged:
        result.add("table_corrupt", rel, f"unreadable Parquet ({why}): delete it and re-run the build")
    return len(damaged)


def _check_seal(corpus: Corpus, result: VerifyResult, progress: bool) -> None:
    """Each file against the build's seal: changed, missing, or not the build's at all (stray)."""
    try:
        seal = read_seal(corpus)
    except CorpusError as exc:
        result.add("seal_unreadable", SEAL, str(exc))
        return
    if seal is None:
        result.add("seal_missing", SEAL, "the corpus has no seal: was its build finished?")
        return
    present = sealed_files(corpus)
    for rel in tqdm(present, desc="verify seal", unit="file", disable=None if progress else True):
        if rel not in seal:
            result.add("stray_file", rel, "not written by the build (not in its seal)")
            continue
        actual = result.hashes.get(rel) or corpus.sha256(rel)
        if actual != seal[rel]:
            result.add("seal_mismatch", rel, "changed since the build sealed it")
    for rel in sorted(set(seal) - set(present)):
        result.add("sealed_missing", rel, "sealed by the build, now missing")


def _shard_rows(con):
    """(shard URL, [(sample_id, members)], {sample_id: image_sha256}) per shard, in URL order, streamed."""
    sql = """
        SELECT s.shard_url, s.sample_id, s.members, i.image_sha256
        FROM shards s LEFT JOIN samples i ON i.sample_id = s.sample_id
        ORDER BY s.shard_url, s.sample_id
    """
    current, samples, image_sha = None, [], {}
    for batch in batches(con, sql):
        urls, sids, members, shas = (batch.column(c).to_pylist() for c in range(4))
        for url, sid, mem, sha in zip(urls, sids, members, shas, strict=True):
            if url != current and current is not None:
                yield current, samples, image_sha
                samples, image_sha = [], {}
            current = url
            samples.append((sid, mem))
            if sha is not None:
                image_sha[sid] = sha
    if current is not None:
        yield current, samples, image_sha


def _check_reader_files(corpus, by_shard, recorded, sizes, classnames, stats, classes, result: VerifyResult) -> None:
    """sizes.json per split folder, a _stats.json per shard, classnames.txt beside each classes.json: all agree."""
    for folder in sorted({url.rpartition("/")[0] for url in by_shard} - set(sizes)):
        result.add("sizes_missing", f"{folder}/{SIZES_FILE}", "open_clip's per-split sample counts are missing")
    for url, n in sorted(by_shard.items()):
        folder, _, name = url.rpartition("/")
        if folder in sizes and sizes[folder].get(name) != n:
            result.add(
                "sizes_entry",
                f"{folder}/{SIZES_FILE}",
                f"{name}: {sizes[folder].get(name)} samples listed, {n} in the shards table",
            )
        rel = stats_path(url)
        if rel not in stats:
            result.add("stats_missing", rel, "the shard's _stats.json is missing")
            continue
        got = corpus.read_json(rel)
        if got.get("samples") != n or got.get("sha256") != recorded[url]:
            result.add("stats_mismatch", rel, "sample count or sha256 differs from the shards table")
    for root, names in sorted(classes.items()):
        if root not in classnames:
            result.add("classnames_missing", f"{root}/{CLASSNAMES_FILE}", "class names beside classes.json are missing")
        elif classnames[root] != names:
            result.add("classnames_mismatch", f"{root}/{CLASSNAMES_FILE}", "lines differ from classes.json's classes")


def _check_listings(by_shard, placed, wids_files, classes, result: VerifyResult) -> None:
    """Each shard in its split's wids index, each wids index exactly the table's shards, classes.json per folder."""
    for index in sorted(set(placed.values())):
        listed = wids_files.get(index)
        if listed is None:
            result.add("wids_missing", index, "training readers' shard list for this split is missing")
            continue
        for url in sorted(listed - {u for u, i in placed.items() if i == index}):
            result.add("wids_orphan", f"{index}:{url}", "listed in the wids index, no rows in the shards table")
    for index in sorted(set(wids_files) - set(placed.values())):
        result.add("wids_orphan", index, "a wids index for a split with no shards in the shards table")
    for root in sorted({url.rpartition("/")[0].rpartition("/")[0] for url in by_shard}):
        if root not in classes:
            result.add("classes_missing", f"{root}/classes.json", "the class list .cls members index is missing")


def _check_blobs(corpus: Corpus, con, result: VerifyResult, progress: bool) -> None:
    """Every kept sample's blob, which the sharder copies into shards, is where the index says and hashes right.

    Packs (``blobs/packs/<unit>.tar``) are streamed once each: every member must be the
    ``blob_packs`` row of that pack at its offset and hash to its name (``blob_hash``,
    ``blob_index``, ``pack_member_unexpected``), every row must find its member
    (``blob_missing``); a pack no row names, or whose images no image row names, is
    ``pack_orphan``. Loose blobs of older corpora are checked as before; any other file
    under ``blobs/`` is ``blob_orphan``.
    """
    present = {corpus.rel(p) for p in corpus.find("blobs")}  # one path per pack: thousands, not millions
    named_packs: set[str] = set()
    # streamed pack by pack (rows in offset order): memory is one pack's rows, not the corpus's
    cur = con.execute(
        'SELECT b.pack, b.image_sha256, b.ext, b."offset", b.length, '
        "EXISTS (SELECT 1 FROM images i WHERE i.image_sha256 = b.image_sha256) FROM blob_packs b "
        'ORDER BY b.pack, b."offset"'
    )
    bar = tqdm(desc="verify packs", unit="pack", disable=None if progress else True)
    for pack, group in itertools.groupby(_fetch(cur), key=lambda r: r[0]):
        rows = [(sha, ext, int(off), int(n), named) for _, sha, ext, off, n, named in group]
        named_packs.add(pack)
        if not any(r[-1] for r in rows):
            result.add("pack_orphan", pack, "a pack whose images no image row names (a source the recipe dropped)")
        if pack not in present:
            result.add("blob_missing", pack, f"pack of {len(rows)} image(s) is missing")
        else:
            _check_pack(corpus, pack, rows, result)
        bar.update()
    bar.close()
    # images in no pack: loose blobs of an older corpus (none in a packed one)
    loose = con.execute(
        "SELECT DISTINCT i.image_sha256, i.image_format FROM images i "
        "WHERE NOT EXISTS (SELECT 1 FROM blob_packs b WHERE b.image_sha256 = i.image_sha256)"
    ).fetchall()
    loose_referenced = {blob_path(sha, blob_ext(fmt)) for sha, fmt in loose}
    for rel in sorted(present):
        if rel.startswith(PACKS + "/") and rel.endswith(".tar"):
            if rel not in named_packs:
                result.add("pack_orphan", rel, "a pack no blob_packs row names (a unit the plan dropped, or a copy)")
        elif rel not in loose_referenced:
            result.add("blob_orphan", rel, "no image row names it (a loose blob of an older build, or a stray file)")
    for sid, sha, fmt, source in con.execute(
        "SELECT s.sample_id, s.image_sha256, i.image_format, i.source_id FROM samples s "
        "JOIN images i ON i.sample_id = s.sample_id WHERE s.status = 'keep' "
        "AND NOT EXISTS (SELECT 1 FROM blob_packs b WHERE b.image_sha256 = s.image_sha256) ORDER BY 1"
    ).fetchall():
        rel = blob_path(sha, blob_ext(fmt))
        if rel not in present:
            result.add("blob_missing", rel, f"blob of {sid} (source {source}) is in no pack and has no loose file")
        elif corpus.sha256(rel) != sha:
            result.add("blob_hash", rel, f"blob of {sid} (source {source}) does not hash to its image_sha256")


def _fetch(cur, n: int = 65_536):
    while batch := cur.fetchmany(n):
        yield from batch


def _check_pack(corpus: Corpus, pack: str, rows: list[tuple], result: VerifyResult) -> None:
    """Stream one pack once: each member against its blob_packs row (place and hash), each row against a member."""
    expected = {f"{sha}.{ext}": (sha, off, n) for sha, ext, off, n, _ in rows}
    seen: set[str] = set()
    try:
        with corpus.fs.open(corpus.path(pack), "rb", block_size=8 * 1024**2) as raw:
            reader = _HashingReader(raw)
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for member in tar:
                    want = expected.get(member.name)
                    if want is None:
                        result.add("pack_member_unexpected", f"{pack}:{member.name}", "no blob_packs row names it")
                        continue
                    sha, off, n = want
                    seen.add(member.name)
                    data = tar.extractfile(member).read() if member.isfile() else b""
                    if (member.offset_data, member.size) != (off, n):
                        where = f"at {member.offset_data}+{member.size}, blob_packs says {off}+{n}"
                        result.add("blob_index", f"{pack}:{member.name}", f"{where}: readers would get other bytes")
                    elif hashlib.sha256(data).hexdigest() != sha:
                        result.add("blob_hash", f"{pack}:{member.name}", "does not hash to the sha256 that names it")
            reader.drain()
        result.hashes[pack] = reader.sha.hexdigest()  # the seal check reuses it
    except (tarfile.TarError, OSError, EOFError) as exc:
        result.add("blob_hash", pack, f"not a readable tar ({type(exc).__name__}: {exc})")
        return
    for name in sorted(set(expected) - seen):
        result.add("blob_missing", f"{pack}:{name}", "named by blob_packs, not in the pack")


def _check_shard(
    corpus,
    url,
    samples,
    sha,
    listed,
    wids_entry,
    image_sha,
    result: VerifyResult,
    classes: list[str] | None = None,
    split: str | None = None,
) -> None:
    if not corpus.exists(url):
        result.add("shard_missing", url, f"{len(samples)} samples recorded in a shard that does not exist")
        return
    expected = {m: sid for sid, members in samples for m in members}
    seen: set[str] = set()
    positives: dict[str, set[str]] = {}  # key -> positive labels of its .json
    with corpus.fs.open(corpus.path(url), "rb") as raw:
        reader = _HashingReader(raw)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for info in tar:
                    name = info.name
                    if name not in expected:
                        result.add("member_unexpected", f"{url}:{name}", "not in the manifest")
                        continue
                    seen.add(name)
                    data = tar.extractfile(info).read() if info.isfile() else b""
                    # a member's sample comes from the manifest: up-sampled repeats have keys <sample_id>-rN
                    sid, ext = expected[name], name.partition(".")[2]
                    if ext in IMAGE_EXTS and hashlib.sha256(data).hexdigest() != image_sha.get(sid):
                        result.add("image_hash", f"{url}:{name}", "image bytes differ from the index's image_sha256")
                    if ext == "json":
                        try:
                            got = json.loads(data).get("sample_id")
                        except (ValueError, AttributeError):
                            got = None
                        if got != sid:
                            result.add("json_mismatch", f"{url}:{name}", f"names sample {got!r}")
                        try:
                            labels = json.loads(data).get("labels") or []
                            positives[name.partition(".")[0]] = {
                                lab.get("label") for lab in labels if lab.get("value", "positive") == "positive"
                            }
                        except (ValueError, AttributeError):
                            pass
                    if ext == "cls" and classes is not None:
                        _check_cls(url, name, data, classes, positives.get(name.partition(".")[0]), result)
        except tarfile.TarError as exc:
            result.add("shard_corrupt", url, f"not a readable tar: {exc}")
        reader.drain()
    result.samples += len(samples)
    if reader.sha.hexdigest() != sha:
        result.add("shard_hash", url, f"sha256 {reader.sha.hexdigest()[:16]}... differs from manifest {sha[:16]}...")
    if listed is None:
        result.add("manifest_entry_missing", url, "in the shards table, not in its folder's manifest.json")
    if wids_entry is None:
        result.add("wids_entry_missing", url, "in the shards table, not in its split's wids index")
    result.hashes[url] = reader.sha.hexdigest()
    if listed is not None and (listed.get("sha256") != sha or listed.get("bytes") != reader.size):
        result.add("shard_size", url, f"{reader.size} bytes on disk, manifest.json says {listed.get('bytes')}")
    if listed is not None and listed.get("nsamples") != len(samples):
        result.add(
            "manifest_count", url, f"manifest.json says {listed.get('nsamples')} samples, the table {len(samples)}"
        )
    if listed is not None and listed.get("split") != split:
        result.add("manifest_split", url, f"manifest.json says split {listed.get('split')!r}, the table {split!r}")
    if wids_entry is not None and wids_entry.get("nsamples") != len(samples):
        result.add("wids_count", url, f"wids index says {wids_entry.get('nsamples')} samples, the table {len(samples)}")
    if wids_entry is not None and (
        wids_entry.get("md5sum") != reader.md5.hexdigest() or wids_entry.get("filesize") != reader.size
    ):
        result.add("wids_entry", url, "md5 or size differs from the wids shard index")
    for name in sorted(set(expected) - seen):
        result.add("member_missing", f"{url}:{name}", f"sample {expected[name]} is in the manifest, not in the shard")


def _check_cls(url, name, data, classes, positives, result: VerifyResult) -> None:
    try:
        index = int(data.decode().strip())
        label = classes[index] if 0 <= index else None
    except (ValueError, IndexError, UnicodeDecodeError):
        label = None
    if label is None:
        result.add("cls_mismatch", f"{url}:{name}", f"{data[:20]!r} is no index into classes.json")
    elif positives is not None and label not in positives:
        result.add("cls_mismatch", f"{url}:{name}", f"class '{label}' is not a positive label of the sample's .json")


def _check_index(con, result: VerifyResult, left_out: set[str] = frozenset()) -> None:
    checks = [
        (
            "manifest_orphan",
            "SELECT sh.sample_id, sh.shard_url FROM shards sh LEFT JOIN samples s USING (sample_id) "
            "WHERE s.sample_id IS NULL OR s.status <> 'keep'",
            "in {} but not a kept sample of the index",
        ),
        (
            "not_sharded",
            "SELECT s.sample_id, s.split FROM samples s ANTI JOIN shards sh USING (sample_id) WHERE s.status = 'keep'",
            "a kept sample ({} split) is in no shard",
        ),
        (
            "split_mismatch",
            "SELECT s.sample_id, sh.split || ' in the manifest, ' || s.split || ' in the index' "
            "FROM samples s JOIN shards sh USING (sample_id) WHERE s.split <> sh.split",
            "{}",
        ),
        (
            "image_without_sample",
            "SELECT i.sample_id, i.source_id FROM images i ANTI JOIN members mb ON mb.member_id = i.sample_id",
            "image row of {} belongs to no sample",
        ),
        (
            "member_without_image",
            "SELECT mb.member_id, mb.sample_id FROM members mb ANTI JOIN images i ON i.sample_id = mb.member_id",
            "member of {} has no image row",
        ),
    ]
    for kind, sql, detail in checks:
        for subject, value in con.execute(sql + " ORDER BY 1").fetchall():
            if kind == "not_sharded" and subject in left_out:
                continue  # dropped by its source's weight, as the shard stage recorded
            result.add(kind, subject, detail.format(value))


def _check_originals(con, roots: dict[str, Path], result: VerifyResult, progress: bool, con_url: str = "") -> None:
    for source_id in sorted(roots):
        root = Path(roots[source_id])
        files = con.execute(
            "SELECT DISTINCT original_uri, original_sha256 FROM images WHERE source_id = ? ORDER BY 1", [source_id]
        ).fetchall()
        if not files:
            result.add("original_source_unknown", source_id, "no images of this source in the index")
            continue
        lookup = phi.load_lookup(con_url, source_id) if con_url else {}
        for uri, sha in tqdm(files, desc=f"verify {source_id}", unit="file", disable=None if progress else True):
            result.originals += 1
            if uri in lookup:
                uri = lookup[uri]  # a keyed layout: the local lookup names the original file
            elif phi.TAG.search(uri) or phi.KEYED.search(uri):
                # identifiers named folders and ingest redacted them: find the file by its pattern and hash
                pattern = phi.KEYED.sub("*", phi.TAG.sub("*", uri))
                candidates = sorted(root.glob(pattern))
                if not candidates:
                    result.add("original_missing", f"{source_id}:{uri}", f"nothing under {root} matches")
                elif not any(sha256_file(p) == sha for p in candidates):
                    result.add("original_changed", f"{source_id}:{uri}", "no matching file has the recorded sha256")
                continue
            path = root / uri
            if not path.is_file():
                result.add("original_missing", f"{source_id}:{uri}", f"not found under {root}")
            elif sha256_file(path) != sha:
                result.add("original_changed", f"{source_id}:{uri}", "sha256 differs from original_sha256")


def format_verify(r: VerifyResult) -> str:
    lines = [f"{p.kind:<22} {p.subject}  {p.detail}" for p in r.problems]
    checked = f"{r.shards} shards, {r.samples} samples"
    if r.originals:
        checked += f", {r.originals} original files"
    if r.ok:
        lines.append(f"ok: {checked} checked, shards, manifest and index agree")
    else:
        kinds = defaultdict(int)
        for p in r.problems:
            kinds[p.kind] += 1
        summary = ", ".join(f"{k}={v}" for k, v in sorted(kinds.items()))
        lines.append(f"FAILED: {len(r.problems)} problem(s) in {checked}: {summary}")
    return "\n".join(lines)
