"""Mutual TLS for the federation: credentials from PEM files, and the identity of a verified peer.

The TLS handshake already rejects any certificate that does not chain to the federation's CA. On
top of that the server pins certificates: the peer's leaf certificate (from gRPC's auth context)
must be one whose SHA-256 fingerprint federation.json lists, and its common name must be the party
id listed with it. A certificate the CA issued later (or to someone else) is therefore refused too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class TlsFiles:
    """PEM paths of one endpoint: the federation CA, its own certificate and private key."""

    ca: Path
    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        return self.ca.read_bytes(), self.cert.read_bytes(), self.key.read_bytes()


def fingerprint_pem(pem: bytes) -> str:
    """SHA-256 over the DER encoding, hex; the form federation.json stores."""
    cert = x509.load_pem_x509_certificate(pem)
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    ca, cert, key = files.read()
    # require_client_auth: a client without a certificate chaining to `ca` fails the handshake.
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    ca, cert, key = files.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


@dataclass(frozen=True)
class Peer:
    name: str  # party id, or the operator's reserved name
    fingerprint: str


def identify(context: grpc.ServicerContext, allowed: Mapping[str, str]) -> Peer | None:
    """The verified peer of an RPC if its certificate is pinned in `allowed` (fingerprint -> name)
    with a matching common name; None otherwise."""
    auth = context.auth_context() or {}
    pems = auth.get("x509_pem_cert") or []
    if len(pems) != 1:
        return None
    try:
        pem = bytes(pems[0])
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    fp = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
    name = allowed.get(fp)
    if name is None:
        return None
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1 or cns[0].value != name:
        return None
    return Peer(name, fp)
