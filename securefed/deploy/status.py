"""`fetch_status`: ask a running coordinator where it stands (round, connected parties, bytes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from securefed.deploy.kit import load_status_tls
from securefed.transport.client import call_status


def fetch_status(federation_dir: str | Path, *, address: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """federation_dir: the server folder (uses the operator certificate) or a party kit. Raises
    transport.client.TransportError (code UNAVAILABLE when no coordinator is running)."""
    fed, tls = load_status_tls(federation_dir)
    return call_status(address or fed.address, tls, fed.limits, timeout, server_name=fed.server_host)


def read_status(folder: str | Path, unreachable: str) -> dict[str, Any]:
    """Where a federation stands from its files alone, when no coordinator answers (it finished, or is
    down): the server folder's checkpoint and run rows (run_record.py), or a party kit's own files."""
    from securefed.deploy.checkpoint import load_checkpoint
    from securefed.deploy.run_record import RunRecord, SUMMARY
    from securefed.deploy.settings import load_federation

    d = Path(folder)
    fed = load_federation(d / "federation.json")
    info: dict[str, Any] = {"coordinator": f"not reachable ({unreachable})", "federation_id": fed.federation_id,
                            "protocol": fed.protocol, "rounds": fed.rounds}
    if (d / "operator.pem").is_file():  # the server folder (a party kit has no operator certificate)
        cp = load_checkpoint(d / "state" / "checkpoint.bin", fed.federation_id)
        info["rounds_completed"] = 0 if cp is None else cp.last_round + 1
        info["finished"] = (d / SUMMARY).is_file()
        rows = RunRecord(d, fed).rows()
        if rows:
            info["last_round_metrics"] = rows[-1]
    else:  # a party kit: the final adapter arrives when the federation ends
        info["final_adapter"] = (d / "final-adapter" / "adapter_model.safetensors").is_file()
    return info
