"""The tar writer: USTAR members with a fixed mtime, owner, mode and order, hashed as they are written.

Written by hand rather than through ``tarfile``'s stream mode: the same bytes (a
test compares them), at several times the speed. A shard appears under its final
name only when complete (``Corpus.open_atomic``).
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterable

from curator.errors import CuratorError
from curator.storage import Corpus

# 2024-01-01T00:00:00Z: a fixed, plausible mtime so tar bytes never depend on when they were written.
TAR_MTIME = 1704067200
TAR_BLOCK = 512
_PAD = bytes(TAR_BLOCK)


def member_size(n: int) -> int:
    """A member's bytes in a tar: its header block and its data padded to whole blocks."""
    return TAR_BLOCK + (n + TAR_BLOCK - 1) // TAR_BLOCK * TAR_BLOCK


def tar_size(members):
    """A tar's bytes from its members' (block-padded) bytes: two end blocks, then padding to tarfile's record."""
    record = tarfile.RECORDSIZE
    return -(-(members + 2 * TAR_BLOCK) // record) * record


class HashingWriter:
    """Buffers small writes (tar headers, json, padding) into large ones, hashing each once."""

    def __init__(self, fh, buffer: int = 4 * 1024**2):
        self.fh = fh
        self.sha = hashlib.sha256()
        self.md5 = hashlib.md5()
        self.size = 0
        self._buf = bytearray()
        self._limit = buffer

    def write(self, data: bytes) -> int:
        self._buf += data
        self.size += len(data)
        if len(self._buf) >= self._limit:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buf:
            view, self._buf = self._buf, bytearray()  # handed on whole, never changed after: no copy
            self.fh.write(view)
            self.sha.update(view)
            self.md5.update(view)


def tar_header_slow(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = TAR_MTIME
    info.mode = 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


# The fields after the name that never change: mode 0444, uid/gid 0, then size, mtime, checksum, type.
_HEAD = b"0000444\x000000000\x000000000\x00"
_MTIME = b"%011o\x00" % TAR_MTIME
_TAIL = b"0" + bytes(100) + b"ustar\x0000" + bytes(64 + 16 + 155 + 12)  # names, devs, prefix: NUL


def tar_header(name: str, size: int) -> bytes:
    """A USTAR header byte-identical to ``tarfile``'s for our fixed fields, built without its machinery.

    ``tarfile`` spends more time building headers than hashing the data.
    ``tar_header_slow`` is the reference a test compares against.
    """
    raw = name.encode("utf-8")
    if len(raw) > 100:  # keys hold no '/', so USTAR's prefix field cannot help
        raise CuratorError(f"tar member name '{name}' is over USTAR's 100 bytes: use a shorter source id")
    if size >= 8**11:
        raise CuratorError(f"tar member '{name}' is {size} bytes, over USTAR's 8 GiB limit")
    head = raw + bytes(100 - len(raw)) + _HEAD + b"%011o\x00" % size + _MTIME
    checksum = sum(head) + sum(_TAIL) + 8 * 32
    return head + b"%06o\x00 " % checksum + _TAIL


def write_tar(corpus: Corpus, rel: str, members: Iterable[tuple[str, bytes]]) -> tuple[int, str, str]:
    """Stream one USTAR tar of ``(name, data)`` members; return its size, sha256 and md5.

    Header, data, zero padding per member, then two zero blocks, then padding to
    ``tarfile``'s 20-block record, so either reader sees the same bytes.
    """
    with corpus.open_atomic(rel) as fh:
        out = HashingWriter(fh)
        for name, data in members:
            out.write(tar_header(name, len(data)))
            out.write(data)
            if len(data) % TAR_BLOCK:
                out.write(_PAD[: TAR_BLOCK - len(data) % TAR_BLOCK])
        out.write(bytes(2 * TAR_BLOCK))
        record = tarfile.RECORDSIZE
        if out.size % record:
            out.write(bytes(record - out.size % record))
        out.flush()
    return out.size, out.sha.hexdigest(), out.md5.hexdigest()
