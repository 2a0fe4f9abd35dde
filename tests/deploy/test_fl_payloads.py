"""The deployment apps' payload codec: safetensors bytes with metadata, rejected cleanly when bad."""

import pytest
import torch

from securefed.deploy.fl_apps import pack_tensors, unpack_tensors


def test_round_trip_keeps_groups_and_metadata():
    blob = pack_tensors({"params": {"a.w": torch.arange(4.0)}, "control": None}, {"round": 3, "lr": 0.5})
    groups, meta = unpack_tensors(blob)
    assert list(groups) == ["params"] and torch.equal(groups["params"]["a.w"], torch.arange(4.0))
    assert meta == {"round": 3, "lr": 0.5}


@pytest.mark.parametrize("blob", [b"", b"\x00" * 7, b"garbage" * 10, (10**9).to_bytes(8, "little") + b"{}"])
def test_malformed_payload_is_a_value_error(blob):
    with pytest.raises(ValueError, match="malformed"):
        unpack_tensors(blob)
