"""A per-federation certificate authority and the certificates it issues (EC P-256, SHA-256).

P-256 rather than Ed25519 for TLS: every gRPC/BoringSSL build negotiates ECDSA P-256, and the
certificates never leave the federation. Files are written atomically (temp file in the same
folder, fsync, os.replace) so a crash never leaves half a key; private keys are 0600 from birth.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from securefed.atomic import atomic_write_bytes

VALID_DAYS = 825


@dataclass(frozen=True)
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(federation_id: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = _name(f"securefed CA {federation_id}")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for n in dict.fromkeys(names):  # dedupe, keep order
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(entries)


def issue(ca: Issued, common_name: str, *, server_names: list[str] | None = None) -> Issued:
    """A leaf certificate: a TLS server certificate when `server_names` is given (SAN = those
    names), else a client certificate whose CN is the identity (party id)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return Issued(key, _leaf(ca, common_name, key.public_key(), server_names))


def make_csr(common_name: str) -> tuple[bytes, bytes]:
    """On the party's machine: (private key PEM, certificate signing request PEM) for CN = party id."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name(common_name)).sign(key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def issue_for_csr(ca: Issued, csr_pem: bytes, common_name: str) -> bytes:
    """Operator: a client certificate (PEM) for a party's CSR, after `check_csr`. The party's
    private key never comes here."""
    return _leaf(ca, common_name, check_csr(csr_pem, common_name), None).public_bytes(serialization.Encoding.PEM)


def check_csr(csr_pem: bytes, common_name: str) -> ec.EllipticCurvePublicKey:
    """The CSR's key, after checking the request is well-formed, self-signed by its key, names
    exactly `common_name` and holds a P-256 key. Raises ValueError naming what is wrong."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise ValueError(f"certificate request of {common_name!r} is not a PEM CSR") from None
    if not csr.is_signature_valid:
        raise ValueError(f"certificate request of {common_name!r} has a bad signature")
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1 or cns[0].value != common_name:
        raise ValueError(f"certificate request of {common_name!r} names another party")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"certificate request of {common_name!r} must hold an EC P-256 key")
    return key


def _leaf(ca: Issued, common_name: str, public_key: ec.EllipticCurvePublicKey,
          server_names: list[str] | None) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    eku = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    if server_names:
        b = b.add_extension(_san(server_names), critical=False)
    return b.sign(ca.key, hashes.SHA256())


def write_atomic(path: Path, data: bytes, *, private: bool) -> None:
    """Atomic write; mode 0600 for private files (set before any byte is written, so the secret is
    never readable by others, not even briefly)."""
    atomic_write_bytes(path, data, mode=0o600 if private else 0o644)