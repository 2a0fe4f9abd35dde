"""Who may connect, and what a connected party may send: foreign CA, unpinned certificate, garbage,
oversized frames and messages, replayed sequence numbers, spoofed sender or federation. Every
rejection ends only the offending stream with a clear status; the server keeps serving and the
federation then completes."""

from __future__ import annotations

import queue
from unittest import mock

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from _deploy_helpers import HOST, expected_sums, provision, server_state, wait_for
from securefed.deploy.party import run_client
from securefed.deploy.pki import Issued, issue, write_atomic
from securefed.deploy.status import fetch_status
from securefed.transport.assembly import split
from securefed.transport.client import PartyLink, TransportError, open_channel
from securefed.transport.frames import NO_SESSION, Frame, Kind, decode
from securefed.transport.server import SESSION_METHOD, WIRE_VERSION
from securefed.transport.tls import TlsFiles, channel_credentials

PARTIES = ("mallory", "p0", "p1")


class RawStream:
    """A hand-driven Session stream with a party certificate: sends exactly the bytes given."""

    def __init__(self, fed, tls: TlsFiles, big_send: bool = False) -> None:
        if big_send:  # let oversized frames leave the client so the *server* has to refuse them
            options = [("grpc.ssl_target_name_override", fed.config.server_host)]
            self.channel = grpc.secure_channel(fed.config.address, channel_credentials(tls), options=options)
        else:
            self.channel = open_channel(fed.config.address, tls, fed.config.limits, fed.config.server_host)
        self.out: queue.Queue = queue.Queue()
        self.responses = self.channel.stream_stream(SESSION_METHOD)(iter(self.out.get, None))
        self.fed = fed

    def frames(self, kind, seq, data=b"", session=NO_SESSION, sender="mallory", fed_id=None, **kw):
        return split(kind=kind, federation_id=fed_id or self.fed.config.federation_bytes, session=session,
                     round=kw.get("round", 0), attempt=0, step=kw.get("step", 0), seq=seq, stage="",
                     sender=sender, data=data, limits=self.fed.config.limits)

    def hello(self) -> bytes:
        for f in self.frames(Kind.HELLO, 1, WIRE_VERSION):
            self.out.put(f)
        welcome = decode(next(self.responses), self.fed.config.chunk_size)
        assert welcome.kind == Kind.WELCOME
        return welcome.session

    def status_after(self, *raws: bytes) -> grpc.StatusCode:
        for raw in raws:
            self.out.put(raw)
        try:
            for _ in self.responses:
                pass
        except grpc.RpcError as e:
            return e.code()
        finally:
            self.out.put(None)
            self.channel.close()
        return grpc.StatusCode.OK


def _tls(fed, pid):
    d = fed.party_dirs[pid]
    return TlsFiles(d / "ca.pem", d / "party.pem", d / "party-key.pem")


def test_refusals_and_garbage_then_federation_completes(tmp_path, procs):
    fed = provision(tmp_path / "fed", PARTIES, "plain", rounds=1, min_parties=2, chunk_size=4096,
                    max_message_bytes=16384)
    procs.server(fed)
    wait_for(lambda: _status_ok(fed), 30, "the coordinator to serve Status")
    mallory = _tls(fed, "mallory")

    # A certificate from another CA fails the TLS handshake (the client trusts the right CA, so it
    # is the server that refuses): the stream never opens.
    other = provision(tmp_path / "other", ("p0",), "plain")
    foreign = TlsFiles(fed.server_dir / "ca.pem", other.party_dirs["p0"] / "party.pem",
                       other.party_dirs["p0"] / "party-key.pem")
    link = PartyLink(address=fed.config.address, tls=foreign, federation_id=fed.config.federation_bytes,
                     party_id="p0", limits=fed.config.limits, server_name=HOST)
    with pytest.raises(TransportError) as e:
        link.connect(2.0)
    assert e.value.code == "UNAVAILABLE"
    link.close()

    # A certificate from the federation's own CA but not pinned in federation.json: refused.
    ca_key = load_pem_private_key((fed.ca_dir / "ca-key.pem").read_bytes(), None)
    ca = Issued(ca_key, x509.load_pem_x509_certificate((fed.ca_dir / "ca.pem").read_bytes()))
    rogue = issue(ca, "p0")
    write_atomic(tmp_path / "rogue.pem", rogue.cert_pem, private=False)
    write_atomic(tmp_path / "rogue-key.pem", rogue.key_pem, private=True)
    rogue_tls = TlsFiles(fed.ca_dir / "ca.pem", tmp_path / "rogue.pem", tmp_path / "rogue-key.pem")
    r = RawStream(fed, rogue_tls)
    assert r.status_after(*r.frames(Kind.HELLO, 1, WIRE_VERSION, sender="p0")) == grpc.StatusCode.PERMISSION_DENIED

    # A party of another release (another wire version) is told so and stops instead of redialling.
    other_release = PartyLink(address=fed.config.address, tls=mallory, federation_id=fed.config.federation_bytes,
                              party_id="mallory", limits=fed.config.limits, server_name=HOST)
    with mock.patch("securefed.transport.client.WIRE_VERSION", b"2"), pytest.raises(TransportError) as e:
        other_release.connect(5.0)
    assert e.value.code == "FAILED_PRECONDITION" and "wire version" in e.value.detail and "speaks 1" in e.value.detail
    other_release.close()
    with mock.patch("securefed.transport.client.WIRE_VERSION", b"2"), pytest.raises(TransportError) as e:
        run_client(fed.party_dirs["mallory"], lambda fed_config, role: None)  # fails before any app work
    assert e.value.code == "FAILED_PRECONDITION" and not e.value.detail.startswith("giving up")  # no redial

    # Garbage, oversized and forged frames from a pinned party: each ends that stream only.
    s = RawStream(fed, mallory)
    assert s.status_after(b"\x00garbage" * 10) == grpc.StatusCode.INVALID_ARGUMENT
    s = RawStream(fed, mallory, big_send=True)
    assert s.status_after(b"x" * 200_000) == grpc.StatusCode.RESOURCE_EXHAUSTED  # above gRPC's frame cap
    s = RawStream(fed, mallory)
    session = s.hello()
    huge = Frame(Kind.READY, fed.config.federation_bytes, session, 0, 0, 0, 2, 0, 244141, 10**9, "", "mallory",
                 b"x" * 4096)  # declares a 1 GB message: refused at its first chunk, nothing buffered
    assert s.status_after(huge.encode()) == grpc.StatusCode.RESOURCE_EXHAUSTED
    s = RawStream(fed, mallory)
    session = s.hello()
    ready = s.frames(Kind.READY, 2, session=session)[0]
    assert s.status_after(ready, ready) == grpc.StatusCode.INVALID_ARGUMENT  # replayed sequence number
    s = RawStream(fed, mallory)
    session = s.hello()
    assert s.status_after(*s.frames(Kind.READY, 2, session=session, sender="p0")) == grpc.StatusCode.PERMISSION_DENIED
    s = RawStream(fed, mallory)
    session = s.hello()
    assert s.status_after(*s.frames(Kind.READY, 2, session=session, fed_id=bytes(16))) == grpc.StatusCode.PERMISSION_DENIED
    s = RawStream(fed, mallory)
    s.hello()
    assert s.status_after(*s.frames(Kind.READY, 2)) == grpc.StatusCode.INVALID_ARGUMENT  # not bound to the session

    status = fetch_status(fed.server_dir)
    assert status["rejected_streams"] >= 6 and status["refused_certificates"] == 1 and status["connected"] == [] and status["round"] == 1
    assert fetch_status(fed.party_dirs["p0"])["federation_id"] == fed.config.federation_id

    # The server kept serving: the real parties now run the round to the end.
    for pid in ("p0", "p1"):
        procs.client(fed, pid)
    assert procs.wait("server", 60) == 0, procs.tail("server")
    want, _ = expected_sums(fed, {0: ("p0", "p1")})
    np.testing.assert_array_equal(server_state(fed)["delta_sum"], want)


def test_oversized_payload_refused_by_sender(tmp_path):
    fed = provision(tmp_path / "fed", ("p0",), "plain", chunk_size=4096, max_message_bytes=8192)
    with pytest.raises(ValueError):
        split(kind=Kind.REPLY, federation_id=fed.config.federation_bytes, session=bytes(16), round=0, attempt=0,
              step=1, seq=1, stage="s", sender="p0", data=b"x" * 8193, limits=fed.config.limits)


def _status_ok(fed) -> bool:
    try:
        fetch_status(fed.server_dir, timeout=1.0)
        return True
    except TransportError:
        return False
