"""A tar worker finds its shard's row groups by statistics and leaves no parsed footer behind."""

import gc

import pyarrow as pa
import pyarrow.parquet as pq

from curator.stages.shard.work import _groups_of


def _routed(path, shards: list[int], per_group: int) -> None:
    """A routed-like file: rows sorted by shard, cut into row groups of ``per_group`` rows."""
    table = pa.table({"shard": pa.array(shards, pa.int32()), "pos": pa.array(range(len(shards)), pa.int64())})
    pq.write_table(table, path, row_group_size=per_group)


def test_groups_of_picks_the_row_groups_whose_statistics_hold_the_shard(tmp_path):
    path = tmp_path / "by-shard.parquet"
    _routed(path, [0] * 5 + [1] * 7 + [2] * 2 + [4] * 6, per_group=4)  # groups: 0 | 0,1 | 1 | 2,4 | 4
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 5
    assert _groups_of(meta, 0) == [0, 1]
    assert _groups_of(meta, 1) == [1, 2]
    assert _groups_of(meta, 2) == [3]
    assert _groups_of(meta, 3) == [3]  # within a group's min..max: read, finds no rows
    assert _groups_of(meta, 4) == [3, 4]
    assert _groups_of(meta, 5) == []


def test_groups_of_leaves_no_cyclic_garbage(tmp_path):
    # one worker opens the routed file once per shard: a cycle through the parsed footer
    # (FileMetaData.schema did that) keeps ~14 MB per shard alive at 1M samples until the
    # cyclic collector runs, which in a worker is rarely
    path = tmp_path / "by-shard.parquet"
    _routed(path, [k // 10 for k in range(200)], per_group=16)
    # only pyarrow's metadata objects are counted: other tests' threads may make garbage meanwhile
    enabled = gc.isenabled()
    gc.disable()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds goes to gc.garbage, to be inspected
    try:
        for number in range(5):
            with open(path, "rb") as fh:
                assert _groups_of(pq.ParquetFile(fh).metadata, number)
        gc.collect()
        cyclic = [o for o in gc.garbage if isinstance(o, (pq.FileMetaData, pq.ParquetSchema))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()
    assert cyclic == []
