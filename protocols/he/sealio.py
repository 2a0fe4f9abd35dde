"""Bytes <-> SEAL objects through TenSEAL's SEAL binding (`tenseal.sealapi`), and a structural check
of untrusted SEAL blobs before SEAL parses them.

`tenseal.sealapi` saves and loads only through file paths, so objects pass through a private
(0700) temporary directory, in RAM (/dev/shm) where available; each file is removed right after.
"""

from __future__ import annotations

import atexit
import itertools
import os
import struct
import tempfile
import threading
from typing import Any, Callable

from securefed.protocols.base import ProtocolError

_lock = threading.Lock()
_counter = itertools.count()
_dir: str | None = None

SEAL_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, version major/minor, compr, reserved, size
SEAL_MAGIC = 0xA15E
_ZSTD_MAGIC = 0xFD2FB528
_COMPR_NONE, _COMPR_ZSTD = 0, 2


def _tmp_path() -> str:
    global _dir
    with _lock:
        if _dir is None or not os.path.isdir(_dir):
            shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
            _dir = tempfile.mkdtemp(prefix="securefed-he-", dir=shm)  # mode 0700
            atexit.register(_remove_dir, _dir)
        return os.path.join(_dir, f"{os.getpid()}-{threading.get_ident()}-{next(_counter)}")


def _remove_dir(path: str) -> None:
    try:
        os.rmdir(path)  # empty by then: every file is removed right after use
    except OSError:
        pass


def save_bytes(save: Callable[[str], Any]) -> bytes:
    """`save(path)` writes a SEAL object; return its bytes."""
    path = _tmp_path()
    try:
        save(path)
        with open(path, "rb") as f:
            return f.read()
    finally:
        if os.path.exists(path):
            os.remove(path)


def load_bytes(load: Callable[[str], Any], data: bytes) -> None:
    """Feed `data` to `load(path)` (which raises on anything SEAL rejects)."""
    path = _tmp_path()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        load(path)
    finally:
        os.remove(path)


def check_blob(blob: bytes, max_inflated: int) -> None:
    """Raise ProtocolError unless `blob` is one SEAL object whose declared size is its length and
    which cannot inflate beyond `max_inflated` bytes.

    SEAL validates what it loads against the context, but it inflates zstd streams before looking
    at them: a small hostile blob could decompress to gigabytes. We therefore require one zstd
    frame that declares its content size (SEAL writes those; libzstd enforces the declared size),
    with no dictionary, whose blocks end exactly at the end of the blob.
    """
    if len(blob) < SEAL_HEADER.size or len(blob) > max_inflated + SEAL_HEADER.size:
        raise ProtocolError("malformed message")
    magic, hsize, _major, _minor, compr, reserved, size = SEAL_HEADER.unpack_from(blob)
    if magic != SEAL_MAGIC or hsize != SEAL_HEADER.size or reserved != 0 or size != len(blob):
        raise ProtocolError("malformed message")
    if compr == _COMPR_NONE:
        return
    if compr != _COMPR_ZSTD:
        raise ProtocolError("malformed message")
    _check_zstd_frame(blob, SEAL_HEADER.size, max_inflated)


def _check_zstd_frame(blob: bytes, pos: int, max_inflated: int) -> None:
    end = len(blob)
    if end - pos < 6 or struct.unpack_from("<I", blob, pos)[0] != _ZSTD_MAGIC:
        raise ProtocolError("malformed message")
    fhd = blob[pos + 4]
    pos += 5
    fcs_flag, single_segment, checksum, dict_flag = fhd >> 6, (fhd >> 5) & 1, (fhd >> 2) & 1, fhd & 3
    if dict_flag or (fhd >> 3) & 1:  # no dictionary; reserved bit clear
        raise ProtocolError("malformed message")
    if not single_segment:
        pos += 1  # window descriptor
    fcs_size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if fcs_size == 0 or end - pos < fcs_size:
        raise ProtocolError("malformed message")  # content size must be declared
    content = int.from_bytes(blob[pos : pos + fcs_size], "little") + (256 if fcs_size == 2 else 0)
    if content > max_inflated:
        raise ProtocolError("malformed message")
    pos += fcs_size
    while True:
        if end - pos < 3:
            raise ProtocolError("malformed message")
        h = int.from_bytes(blob[pos : pos + 3], "little")
        last, btype, bsize = h & 1, (h >> 1) & 3, h >> 3
        if btype == 3:
            raise ProtocolError("malformed message")
        pos += 3 + (1 if btype == 1 else bsize)  # RLE blocks carry one byte
        if pos > end:
            raise ProtocolError("malformed message")
        if last:
            break
    if pos + 4 * checksum != end:
        raise ProtocolError("malformed message")
