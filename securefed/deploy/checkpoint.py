"""The coordinator's checkpoint: app state after the last completed round, bound to the federation.

    magic "SFCK" | version u16 | federation id 16B | last completed round i64 | state length u64 |
    state | sha256 of everything before

Written atomically (temp + fsync + os.replace) after every completed round, so a coordinator killed
at any moment restarts from a whole, verified checkpoint.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

from securefed.deploy.pki import write_atomic
from securefed.errors import ConfigError

_HEAD = struct.Struct("<4sH16sqQ")
_VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    federation_id: str
    last_round: int  # last completed round (0-based)
    state: bytes


def save_checkpoint(path: Path, cp: Checkpoint) -> None:
    body = _HEAD.pack(b"SFCK", _VERSION, bytes.fromhex(cp.federation_id), cp.last_round, len(cp.state)) + cp.state
    # Not a party secret, but the app state may be a model: keep it owner-only.
    write_atomic(path, body + hashlib.sha256(body).digest(), private=True)


def load_checkpoint(path: Path, federation_id: str) -> Checkpoint | None:
    """None when there is no checkpoint yet; ConfigError if it is corrupt or from another federation."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < _HEAD.size + 32 or hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise ConfigError(f"{path}: checkpoint is corrupt")
    magic, version, fed, last, n = _HEAD.unpack_from(data)
    if magic != b"SFCK" or version != _VERSION or len(data) != _HEAD.size + n + 32:
        raise ConfigError(f"{path}: not a checkpoint this version can read")
    if fed.hex() != federation_id:
        raise ConfigError(f"{path}: checkpoint belongs to another federation")
    return Checkpoint(federation_id, last, data[_HEAD.size : _HEAD.size + n])
