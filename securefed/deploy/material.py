"""Serializing a protocol's long-lived key material (from `provision`) into kit files.

The transport cannot know what secagg's or he's material looks like, so a protocol whose material
is not None implements the MaterialCodec hook on its protocol object:

    dump_material(material) -> bytes      # server or party material, self-describing
    load_material(data: bytes) -> material

Material that is None (plain) needs no hook. The file wraps the protocol's bytes with a magic, the
protocol name and a length, so a kit made for one protocol is not silently fed to another.
"""

from __future__ import annotations

import struct
from typing import Any, Protocol, runtime_checkable

from securefed.errors import ConfigError

_MAGIC = b"SFMAT1"
_HEAD = struct.Struct("<6sBH")  # magic, has_material, protocol name length; then name, u64 length, bytes
_LEN = struct.Struct("<Q")


@runtime_checkable
class MaterialCodec(Protocol):
    def dump_material(self, material: Any) -> bytes: ...

    def load_material(self, data: bytes) -> Any: ...


def encode_material(protocol: Any, material: Any) -> bytes:
    name = str(getattr(protocol, "name", "")).encode()
    if material is None:
        return _HEAD.pack(_MAGIC, 0, len(name)) + name + _LEN.pack(0)
    if not isinstance(protocol, MaterialCodec):
        raise ConfigError(
            f"protocol {protocol.name!r} provisions key material but has no dump_material/load_material"
        )
    data = protocol.dump_material(material)
    if not isinstance(data, bytes):
        raise TypeError(f"{protocol.name}.dump_material must return bytes")
    return _HEAD.pack(_MAGIC, 1, len(name)) + name + _LEN.pack(len(data)) + data


def decode_material(protocol: Any, blob: bytes) -> Any:
    name = str(getattr(protocol, "name", "")).encode()
    bad = ConfigError(f"material file is not valid for protocol {protocol.name!r}")
    if len(blob) < _HEAD.size:
        raise bad
    magic, has, n = _HEAD.unpack_from(blob)
    off = _HEAD.size
    if magic != _MAGIC or has not in (0, 1) or blob[off : off + n] != name:
        raise bad
    off += n
    if len(blob) < off + _LEN.size:
        raise bad
    (length,) = _LEN.unpack_from(blob, off)
    off += _LEN.size
    if len(blob) != off + length:
        raise bad
    if not has:
        if length:
            raise bad
        return None
    if not isinstance(protocol, MaterialCodec):
        raise bad
    return protocol.load_material(blob[off:])
