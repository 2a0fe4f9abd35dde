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
