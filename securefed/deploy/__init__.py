"""Real federations: provisioning kits, the coordinator process and the party process.

Entry points (the CLI calls these): provision_federation, run_server, run_client, fetch_status.
"""

from securefed.deploy.apps import ClientApp, ServerApp
from securefed.deploy.coordinator import RoundFailed, ServerSummary, run_server
from securefed.deploy.party import ClientSummary, run_client
from securefed.deploy.provision import FederationPaths, provision_federation
from securefed.deploy.settings import FederationConfig, Timeouts, load_federation
from securefed.deploy.status import fetch_status

__all__ = [
    "ClientApp", "ClientSummary", "FederationConfig", "FederationPaths", "RoundFailed", "ServerApp",
    "ServerSummary", "Timeouts", "fetch_status", "load_federation", "provision_federation", "run_client",
    "run_server",
]
