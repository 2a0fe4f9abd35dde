"""A pinned (authenticated) party against the server's memory and workers.

v1: any message up to max_message_bytes (512 MiB by default) was buffered whole, asked for or
not; and a stream that never sent HELLO held a gRPC worker for 10 s, as many as the party opened.
Now a message is buffered only up to what the current stage allows (decided at its first chunk;
the rest is read and dropped), and a party has at most one stream waiting for its HELLO."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from _deploy_helpers import provision
from securefed.deploy.kit import load_server_kit
from securefed.deploy.provision import OPERATOR_NAME
from securefed.protocols.secagg import frames
from securefed.protocols.secagg.frames import Stage
from securefed.transport.assembly import Limits, Reassembler, split
from securefed.transport.frames import PARTY_KINDS, Kind
from securefed.transport.server import SMALL_MESSAGE_BYTES, Hub, grpc_options
from securefed.transport.tls import TlsFiles, server_credentials
from test_deploy_security import RawStream

from _harness import context, make_inputs, secagg

FED, SESSION = bytes(range(16)), bytes(range(16, 32))
LIMITS = Limits(chunk_size=1024, max_message_bytes=1 << 20)


def _frames(seq, size, kind=Kind.REPLY):
    return split(kind=kind, federation_id=FED, session=SESSION, round=0, attempt=0, step=1, seq=seq,
                 stage="s", sender="p0", data=b"x" * size, limits=LIMITS)


def test_message_above_the_budget_is_never_buffered() -> None:
    r = Reassembler(federation_id=FED, sender="p0", allowed=PARTY_KINDS, limits=LIMITS, session=SESSION,
                    budget=lambda f: 10_000)
    raws = _frames(1, 500_000)
    for raw in raws:
        assert r.feed(raw) is None
        assert r._pending is None or (r._pending.parts == [] and r._pending.size == 0)
    assert r.discarded == 1
    env = [r.feed(x) for x in _frames(2, 9_000)][-1]  # the stream goes on; in-budget messages arrive
    assert env is not None and len(env.data) == 9_000


def test_hub_budget_follows_the_expected_stage(tmp_path) -> None:
    hub = Hub(federation_id=FED, parties={"fp": "p0"}, observers={}, limits=LIMITS)
    frame = type("F", (), {"kind": Kind.REPLY, "round": 2, "attempt": 1, "step": 3})
    assert hub._budget("p0", frame) == SMALL_MESSAGE_BYTES  # nothing asked: control-sized only
    hub.expect(2, 1, 3, {"p0": object()}, max_reply_bytes=12_345)
    assert hub._budget("p0", frame) == 12_345
    assert hub._budget("p1", frame) == SMALL_MESSAGE_BYTES  # not asked this stage
    frame.step = 4
    assert hub._budget("p0", frame) == SMALL_MESSAGE_BYTES  # another step: stale


def test_secagg_stage_bounds_cover_honest_replies_and_stay_near_fp32() -> None:
    ids = tuple(f"p{i}" for i in range(6))
    proto = secagg()
    sm, pm = proto.provision(ids)
    ctx = context(ids, m=5000)
    server, parties = proto.server(ctx, sm), {p: proto.party(ctx, p, make_inputs(ids, 5000, 1)[p], pm[p]) for p in ids}
    out = server.start()
    while not server.done:
        bound = server.max_reply_bytes()
        replies = {p: parties[p].handle(m) for p, m in out.items()}
        assert max(len(r.payload) for r in replies.values()) <= bound
        if next(iter(out.values())).stage == frames.STAGE_NAMES[Stage.MASKED]:
            assert bound <= 4 * 5000 + 8192  # the masked input's bound is ~1.0x fp32 + framing
        out = server.step(replies)
    assert server.result().contributors == ids


def _serve(fed):
    kit = load_server_kit(fed.server_dir)
    hub = Hub(federation_id=fed.config.federation_bytes, parties={p.cert_sha256: p.id for p in fed.config.parties},
              observers={fed.config.operator_cert_sha256: OPERATOR_NAME}, limits=fed.config.limits)
    server = grpc.server(ThreadPoolExecutor(max_workers=8), handlers=[hub.handler()],
                         options=grpc_options(fed.config.limits), maximum_concurrent_rpcs=8)
    server.add_secure_port(fed.config.address, server_credentials(kit.tls))
    server.start()
    return hub, server


def test_silent_streams_and_unasked_big_messages(tmp_path) -> None:
    fed = provision(tmp_path / "fed", ("mallory", "p0"), "plain", chunk_size=4096, max_message_bytes=1 << 20)
    hub, server = _serve(fed)
    d = fed.party_dirs["mallory"]
    tls = TlsFiles(d / "ca.pem", d / "party.pem", d / "party-key.pem")
    try:
        silent = RawStream(fed, tls)
        time.sleep(0.3)  # the first stream is now parked waiting for its HELLO
        t0 = time.monotonic()
        second = RawStream(fed, tls)
        assert second.status_after() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.monotonic() - t0 < 2.0  # refused at once, not after the HELLO timeout
        silent.out.put(None)
        silent.channel.close()
        time.sleep(0.3)
        s = RawStream(fed, tls)
        session = s.hello()
        for raw in s.frames(Kind.REPLY, 2, b"y" * 300_000, session=session, step=1):  # nobody asked
            s.out.put(raw)
        ready = s.frames(Kind.READY, 3, session=session)[0]
        s.out.put(ready)
        deadline = time.monotonic() + 10
        while hub.stale < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hub.oversized == 1 and hub.stale == 1 and hub.rejected == 0  # dropped, stream alive
        assert "mallory" in hub.connected()
        s.out.put(None)
        s.channel.close()
    finally:
        server.stop(0).wait(5)
