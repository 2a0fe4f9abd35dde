"""Reading a provisioned folder back: which role it is for, its TLS files, its protocol material."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from securefed.deploy.keygen import KEY, SECRET, load_party_secret_material
from securefed.deploy.material import decode_material
from securefed.deploy.roster import check_roster
from securefed.deploy.settings import FederationConfig, load_federation
from securefed.errors import ConfigError
from securefed.protocols import registry
from securefed.protocols.keygen import keygen_for
from securefed.transport.tls import TlsFiles, fingerprint_pem


@dataclass(frozen=True)
class Kit:
    dir: Path
    role: str  # "server" or the party id
    federation: FederationConfig
    tls: TlsFiles

    def protocol_and_material(self) -> tuple[Any, Any]:
        """The protocol object (from federation.json) and this role's material."""
        fed = self.federation
        protocol = registry.create(fed.protocol, fed.protocol_config)
        if self.role != "server" and (self.dir / SECRET).exists():  # keys made here by `securefed keygen`
            material = load_party_secret_material(self.dir, self.role, fed.protocol, keygen_for(protocol))
        else:
            path = self.dir / "material.bin"
            try:
                blob = path.read_bytes()
            except OSError as e:
                raise ConfigError(f"{path}: cannot read protocol material ({e})") from None
            material = decode_material(protocol, blob)
        if self.role != "server":
            check_roster(self.dir, self.role, fed, protocol, material)  # own keys, peers' keys, pins
        return protocol, material


def _need(path: Path) -> Path:
    if not path.is_file():
        raise ConfigError(f"{path}: missing from the kit")
    return path


KIT_FILES = ("ca.pem", "party.pem", "federation.json")  # what the operator's fed/<party>/ holds (+ public material)


def check_party_kit_copied(directory: str | Path) -> None:
    """A keys folder whose kit has not been copied in yet gets the step to take, not a file error."""
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"--kit {d}: no such folder (the folder `securefed keygen --out` made on this machine)")
    missing = [f for f in KIT_FILES if not (d / f).is_file()]
    if missing:
        keys = " (its keys from `securefed keygen` are there)" if (d / KEY).is_file() else ""
        raise ConfigError(f"--kit {d}: no {', '.join(missing)} yet{keys}: copy every file of the kit the operator's "
                          f"`securefed provision` wrote for this party (OUT/<party>/) into {d}")


def load_server_kit(directory: str | Path) -> Kit:
    d = Path(directory)
    fed = load_federation(_need(d / "federation.json"))
    tls = TlsFiles(_need(d / "ca.pem"), _need(d / "server.pem"), _need(d / "server-key.pem"))
    if fingerprint_pem(tls.cert.read_bytes()) != fed.server_cert_sha256:
        raise ConfigError(f"{tls.cert}: not the server certificate of this federation")
    _check_key_matches(tls)
    return Kit(d, "server", fed, tls)


def load_party_kit(directory: str | Path) -> Kit:
    d = Path(directory)
    fed = load_federation(_need(d / "federation.json"))
    tls = TlsFiles(_need(d / "ca.pem"), _need(d / "party.pem"), _need(d / "party-key.pem"))
    pem = tls.cert.read_bytes()
    cns = x509.load_pem_x509_certificate(pem).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    pid = str(cns[0].value) if len(cns) == 1 else ""
    pinned = {p.id: p.cert_sha256 for p in fed.parties}
    if pinned.get(pid) != fingerprint_pem(pem):
        raise ConfigError(f"{tls.cert}: not a party certificate of this federation")
    _check_key_matches(tls)
    return Kit(d, pid, fed, tls)


def _check_key_matches(tls: TlsFiles) -> None:
    try:
        key = serialization.load_pem_private_key(tls.key.read_bytes(), None)
    except ValueError:
        raise ConfigError(f"{tls.key}: not a PEM private key") from None
    cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    raw = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, raw) != cert.public_key().public_bytes(
            serialization.Encoding.DER, raw):
        raise ConfigError(f"{tls.key}: does not match the certificate {tls.cert.name}")


def load_status_tls(directory: str | Path) -> tuple[FederationConfig, TlsFiles]:
    """Credentials for the Status RPC: the operator's in a server folder, the party's in a kit."""
    d = Path(directory)
    fed = load_federation(_need(d / "federation.json"))
    if (d / "operator.pem").is_file():
        return fed, TlsFiles(_need(d / "ca.pem"), d / "operator.pem", _need(d / "operator-key.pem"))
    return fed, TlsFiles(_need(d / "ca.pem"), _need(d / "party.pem"), _need(d / "party-key.pem"))
