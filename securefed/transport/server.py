"""Server side of the transport: one long-lived bidirectional stream per party (the "hub").

Design: a party opens `Session` (stream-stream) and keeps it open for the whole federation. The
first frame is HELLO; the server answers WELCOME carrying a fresh random session id to which every
later frame, both directions, is bound. From then on the server pushes work (ROUND_START, STAGE,
ROUND_END, FINAL, BYE) and the party answers (READY, REPLY, NOREPLY, DROPPED). An open stream is
what "connected" means; when it ends (party killed, network gone) the party is a dropout of any
stage it has not answered, at once, without waiting for the stage timeout.

The hub knows nothing about protocols or rounds beyond the envelope: the coordinator states which
answer it expects next (`expect`: round, attempt, step, and which live links) and collects them
(`wait_replies`). Answers for anything else are late or stale and are counted, never applied. A
frame that breaks the envelope rules ends that party's stream with a clear gRPC status; the server
and every other stream keep going.

Threads: gRPC's pool runs each stream's response generator (it drains that link's outbound queue);
one reader thread per stream consumes the request iterator. All hub state is under one Condition.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import grpc

from securefed.transport.assembly import Envelope, Limits, Outgoing, Reassembler
from securefed.transport.frames import (
    FRAME_OVERHEAD,
    PARTY_KINDS,
    SERVER_SENDER,
    FrameError,
    Kind,
)
from securefed.transport.logfmt import kv
from securefed.transport.tls import identify

SERVICE = "securefed.transport.Federation"
SESSION_METHOD = f"/{SERVICE}/Session"
STATUS_METHOD = f"/{SERVICE}/Status"
# Bumped when a message format or a stage's meaning changes without a federation.json setting that
# names it: parties of another release are then refused at HELLO instead of spoiling rounds.
WIRE_VERSION = b"1"
_log = logging.getLogger("securefed.transport.server")


def grpc_options(limits: Limits) -> list[tuple[str, int]]:
    """gRPC's own per-message cap is one frame: an oversized frame fails with RESOURCE_EXHAUSTED
    inside gRPC before any of our code buffers it."""
    cap = limits.chunk_size + FRAME_OVERHEAD
    return [
        ("grpc.max_receive_message_length", cap),
        ("grpc.max_send_message_length", cap),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        # Server side: accept the parties' 20 s keepalive pings; gRPC's default minimum (5 min) answers
        # them with GOAWAY "too_many_pings", which cut long training waits into needless reconnects.
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
    ]


@dataclass(frozen=True)
class _Abort:
    code: str
    detail: str


_CLOSE = object()
_END = object()
HELLO_TIMEOUT_S = 10.0


@dataclass(eq=False)
class Link:
    """One live stream of one party. Identity is the object: a reconnect is a new Link."""

    party: str
    session: bytes
    outbound: "queue.Queue[object]" = field(default_factory=queue.Queue)
    closed: threading.Event = field(default_factory=threading.Event)
    seq: int = 0  # last sequence number sent on this link


@dataclass
class _Expectation:
    round: int
    attempt: int
    step: int
    links: dict[str, Link]
    max_reply_bytes: int | None = None  # None: the federation's max_message_bytes
    replies: dict[str, Envelope] = field(default_factory=dict)


# Control answers (HELLO, READY, NOREPLY, DROPPED) and anything unasked (late, stale): at most this
# much is buffered. A bigger one is read and thrown away frame by frame, never held whole.
SMALL_MESSAGE_BYTES = 4096


class Hub:
    def __init__(
        self,
        *,
        federation_id: bytes,
        parties: Mapping[str, str],
        observers: Mapping[str, str],
        limits: Limits,
        status_provider: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """parties / observers: certificate fingerprint -> name. Observers (the operator) may only
        call Status."""
        self._fed = federation_id
        self._parties = dict(parties)
        self._status_allowed = {**self._parties, **dict(observers)}
        self._limits = limits
        self.status_provider = status_provider or (lambda: {})
        self._cond = threading.Condition()
        self._links: dict[str, Link] = {}
        self._expect: _Expectation | None = None
        self._farewell: bytes | None = None
        self._opening: set[str] = set()  # parties with a stream still waiting for its HELLO
        self._farewelled: set[str] = set()  # parties that were sent FINAL + BYE
        self.bytes_in: dict[str, int] = {}
        self.bytes_out: dict[str, int] = {}
        self.rejected = 0  # streams ended for breaking the envelope rules
        self.refused = 0  # TLS-valid certificates that are not pinned in the federation
        self.stale = 0  # well-formed answers that arrived too late or unasked
        self.oversized = 0  # messages above what their stage allows: read, dropped, never buffered

    # -- gRPC wiring -------------------------------------------------------------------------
    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Session": grpc.stream_stream_rpc_method_handler(self._session),
                "Status": grpc.unary_unary_rpc_method_handler(self._status),
            },
        )

    def _status(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        peer = identify(context, self._status_allowed)
        if peer is None:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "certificate not in this federation")
        if len(request) > 64:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "status request must be empty")
        return json.dumps(self.status_provider(), sort_keys=True).encode()

    def _session(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        peer = identify(context, self._parties)
        if peer is None:
            with self._cond:
                self.refused += 1
            _log.warning(kv("refused", reason="certificate not pinned in federation"))
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "certificate not in this federation")
        pid = peer.name
        with self._cond:
            # One opening stream per party: a party cannot park many silent streams on workers.
            busy = pid in self._opening
            self._opening.add(pid)
        if busy:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "another stream of this party is still opening")
        reasm = Reassembler(federation_id=self._fed, sender=pid, allowed=PARTY_KINDS, limits=self._limits,
                            budget=lambda f: self._budget(pid, f))
        try:
            got = self._first_frame(requests)
        finally:
            with self._cond:
                self._opening.discard(pid)
        if got is None:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"no HELLO within {HELLO_TIMEOUT_S:g} s")
        if got is _END:
            return
        raw = bytes(got)  # type: ignore[arg-type]
        self._count_in(pid, len(raw))
        try:
            hello = reasm.feed(raw)
            if hello is None or hello.kind != Kind.HELLO:
                raise FrameError("INVALID_ARGUMENT", "stream must open with a single-frame HELLO")
            if hello.data != WIRE_VERSION:  # retrying cannot help: the party stops and says why
                raise FrameError("FAILED_PRECONDITION", f"party speaks another wire version; this coordinator "
                                 f"speaks {WIRE_VERSION.decode()}: run the same securefed release on both")
        except FrameError as e:
            self._reject(pid, e)
            context.abort(getattr(grpc.StatusCode, e.code), e.detail)
        link = Link(pid, os.urandom(16))
        reasm.bind_session(link.session)
        # WELCOME is queued before the link becomes visible to the coordinator, so it is always
        # the first frame the party sees (seq 1).
        self.send(link, Kind.WELCOME)
        with self._cond:
            farewell = self._farewell
        if farewell is not None:  # federation finished: a late joiner still gets the result
            self.send(link, Kind.FINAL, data=farewell)
            self.send(link, Kind.BYE)
            with self._cond:
                self._farewelled.add(pid)
        self._register(link)
        if not context.add_callback(lambda: self._close(link)):
            self._close(link)
        threading.Thread(target=self._read, args=(requests, reasm, link), daemon=True,
                         name=f"reader-{pid}").start()
        while True:
            item = link.outbound.get()
            if item is _CLOSE:
                return
            if isinstance(item, _Abort):
                context.abort(getattr(grpc.StatusCode, item.code), item.detail)
            if isinstance(item, Outgoing):
                yield from item.frames()

    @staticmethod
    def _first_frame(requests: Iterator[bytes]) -> object:
        """The stream's first frame, _END if it closed, None if nothing came in time: a peer that
        opens a stream and stays silent must not hold a server worker forever."""
        box: "queue.Queue[object]" = queue.Queue(1)

        def pull() -> None:
            try:
                box.put(next(requests))
            except (StopIteration, grpc.RpcError):
                box.put(_END)

        threading.Thread(target=pull, daemon=True, name="hello").start()
        try:
            return box.get(timeout=HELLO_TIMEOUT_S)
        except queue.Empty:
            return None

    def _budget(self, pid: str, f: Any) -> int:
        """Bytes to buffer for the message that starts with frame f: the current stage's bound for
        an expected REPLY of this party, SMALL_MESSAGE_BYTES for anything else."""
        with self._cond:
            e = self._expect
            if (e is not None and f.kind == Kind.REPLY and pid in e.links
                    and (f.round, f.attempt, f.step) == (e.round, e.attempt, e.step)):
                return self._limits.max_message_bytes if e.max_reply_bytes is None else e.max_reply_bytes
        return SMALL_MESSAGE_BYTES

    def _read(self, requests: Iterator[bytes], reasm: Reassembler, link: Link) -> None:
        try:
            for raw in requests:
                self._count_in(link.party, len(raw))
                try:
                    before = reasm.discarded
                    env = reasm.feed(raw)
                except FrameError as e:
                    self._reject(link.party, e)
                    link.outbound.put(_Abort(e.code, e.detail))
                    return
                if reasm.discarded != before:
                    with self._cond:
                        self.oversized += 1
                    _log.warning(kv("oversized", party=link.party, reason="message above the stage's bound, dropped"))
                if env is not None:
                    self._deliver(link, env)
        except grpc.RpcError:
            pass  # stream cancelled or failed (includes gRPC's own oversize rejection)
        finally:
            self._close(link)

    # -- link bookkeeping ----------------------------------------------------------------------
    def _register(self, link: Link) -> None:
        with self._cond:
            old = self._links.get(link.party)
            self._links[link.party] = link
            self._cond.notify_all()
        if old is not None:
            old.outbound.put(_Abort("ABORTED", "superseded by a newer connection of this party"))
            self._close(old)
        _log.info(kv("connected", party=link.party))

    def _close(self, link: Link) -> None:
        with self._cond:
            if link.closed.is_set():
                return
            link.closed.set()
            if self._links.get(link.party) is link:
                del self._links[link.party]
            self._cond.notify_all()
        link.outbound.put(_CLOSE)
        _log.info(kv("disconnected", party=link.party))

    def _reject(self, pid: str, e: FrameError) -> None:
        with self._cond:
            self.rejected += 1
        _log.warning(kv("rejected", party=pid, code=e.code, reason=e.detail))

    def _count_in(self, pid: str, n: int) -> None:
        with self._cond:
            self.bytes_in[pid] = self.bytes_in.get(pid, 0) + n

    def _deliver(self, link: Link, env: Envelope) -> None:
        with self._cond:
            e = self._expect
            step0 = env.kind in (Kind.READY, Kind.DROPPED)
            stepn = env.kind in (Kind.REPLY, Kind.NOREPLY, Kind.DROPPED)
            ok = (
                e is not None
                and e.links.get(link.party) is link
                and (env.round, env.attempt, env.step) == (e.round, e.attempt, e.step)
                and link.party not in e.replies
                and (step0 if e.step == 0 else stepn)
            )
            if ok:
                e.replies[link.party] = env
                self._cond.notify_all()
            else:
                self.stale += 1

    # -- coordinator API -----------------------------------------------------------------------
    def connected(self) -> dict[str, Link]:
        with self._cond:
            return dict(self._links)

    def wait_connected(self, minimum: int, timeout: float, gather: float, everyone: set[str]) -> dict[str, Link]:
        """Wait up to `timeout` for `minimum` live links, then up to `gather` more for everyone."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._links) < minimum and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            if len(self._links) >= minimum:
                gather_end = time.monotonic() + gather
                while not everyone <= self._links.keys() and (left := gather_end - time.monotonic()) > 0:
                    self._cond.wait(left)
            return dict(self._links)

    def send(self, link: Link, kind: Kind, *, round: int = 0, attempt: int = 0, step: int = 0,
             stage: str = "", data: bytes = b"") -> int:
        """Queue one message on a link; returns the wire bytes queued (0 if the link is gone).
        Raises ValueError (and sends nothing) if `data` exceeds the federation's max message size."""
        with self._cond:  # seq assignment and enqueueing together: a link's frames stay in seq order
            if link.closed.is_set():
                return 0
            out = Outgoing(kind, self._fed, link.session, round, attempt, step, link.seq + 1, stage, SERVER_SENDER,
                           data, self._limits)
            link.seq += 1
            n = out.wire_size()
            self.bytes_out[link.party] = self.bytes_out.get(link.party, 0) + n
            link.outbound.put(out)
        return n

    def expect(self, round: int, attempt: int, step: int, links: Mapping[str, Link],
               max_reply_bytes: int | None = None) -> None:
        """Declare the answers the coordinator waits for next; call before sending the requests.
        max_reply_bytes: the largest reply this stage allows (bigger ones are dropped unbuffered)."""
        with self._cond:
            self._expect = _Expectation(round, attempt, step, dict(links), max_reply_bytes)

    def wait_replies(self, timeout: float) -> dict[str, Envelope]:
        """Answers to the current expectation, once every expected link answered or closed, or at
        the timeout. A missing entry is a dropout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            e = self._expect
            if e is None:
                return {}
            while (left := deadline - time.monotonic()) > 0:
                if all(p in e.replies or l.closed.is_set() for p, l in e.links.items()):
                    break
                self._cond.wait(left)
            return dict(e.replies)

    def finish(self, final_payload: bytes) -> None:
        """Send FINAL + BYE to everyone connected, and to anyone who connects from now on."""
        with self._cond:
            self._farewell = final_payload
            self._expect = None
            links = list(self._links.values())
        for link in links:
            self.send(link, Kind.FINAL, data=final_payload)
            self.send(link, Kind.BYE)
            with self._cond:
                self._farewelled.add(link.party)

    def wait_farewell(self, everyone: set[str], timeout: float) -> bool:
        """After finish: wait until every party got FINAL and closed its stream, or the timeout
        (a party still reconnecting may get FINAL meanwhile)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._links or not everyone <= self._farewelled) and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            return not self._links and everyone <= self._farewelled

    def traffic(self) -> tuple[dict[str, int], dict[str, int]]:
        with self._cond:
            return dict(self.bytes_in), dict(self.bytes_out)
