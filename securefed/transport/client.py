"""Party side of the transport: open the Session stream, send and receive whole messages.

`PartyLink` hides framing: `send` splits a message into chunk-sized frames bound to this session
and the next sequence number; `receive` yields reassembled server messages after the same checks
the server applies (federation, session, sender "server", kinds, sizes, sequence). The server's
identity is established by TLS (its certificate must chain to the federation CA and name the host
the party dials); the CA is per-federation, so no other server can pass.
"""

from __future__ import annotations

import json
import gc
import queue
import threading
from typing import Iterator

import grpc

from securefed.transport.assembly import Envelope, Limits, Outgoing, Reassembler
from securefed.transport.frames import NO_SESSION, SERVER_KINDS, SERVER_SENDER, FrameError, Kind, decode
from securefed.transport.server import SESSION_METHOD, STATUS_METHOD, WIRE_VERSION, grpc_options
from securefed.transport.tls import TlsFiles, channel_credentials

_END = object()


class TransportError(Exception):
    """The stream failed or the server answered something invalid. `code` is the gRPC status name
    when the server ended the stream, else "PROTOCOL"."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def open_channel(address: str, tls: TlsFiles, limits: Limits, server_name: str | None = None) -> grpc.Channel:
    options: list[tuple[str, object]] = list(grpc_options(limits))
    if server_name:
        # Dial an address (e.g. 127.0.0.1) but verify the certificate for the federation's host name.
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(address, channel_credentials(tls), options=options)


class PartyLink:
    def __init__(self, *, address: str, tls: TlsFiles, federation_id: bytes, party_id: str, limits: Limits,
                 server_name: str | None = None) -> None:
        self._address, self._tls, self._server_name = address, tls, server_name
        self._fed, self._pid, self._limits = federation_id, party_id, limits
        self._out: "queue.Queue[object]" = queue.Queue()
        self._seq = 0
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._responses: Iterator[bytes] | None = None
        self._reasm: Reassembler | None = None
        self.session = NO_SESSION
        self.bytes_in = 0
        self.bytes_out = 0

    def _requests(self) -> Iterator[bytes]:
        while True:
            item = self._out.get()
            if item is _END:
                return
            if isinstance(item, Outgoing):
                yield from item.frames()

    def connect(self, timeout: float) -> None:
        """Open the stream, send HELLO, wait for WELCOME. Raises TransportError."""
        self._channel = open_channel(self._address, self._tls, self._limits, self._server_name)
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            self.close()
            raise TransportError("UNAVAILABLE", "server not reachable (or TLS handshake refused)") from None
        call = self._channel.stream_stream(SESSION_METHOD)
        self._responses = call(self._requests())
        self._reasm = Reassembler(federation_id=self._fed, sender=SERVER_SENDER, allowed=SERVER_KINDS,
                                  limits=self._limits, session=None)
        self._send(Kind.HELLO, NO_SESSION, data=WIRE_VERSION)
        first = self._next_raw()
        try:
            welcome = self._peek_welcome(first)
        except FrameError as e:
            self.close()
            raise TransportError("PROTOCOL", e.detail) from None
        self.session = welcome

    def _peek_welcome(self, raw: bytes) -> bytes:
        # The session id is learnt from the WELCOME frame itself, then the same frame goes through
        # the full envelope checks (federation, sender, kind, sequence 1) bound to that session.
        f = decode(raw, self._limits.chunk_size)
        if f.kind != Kind.WELCOME or f.count != 1 or f.seq != 1 or f.session == NO_SESSION or self._reasm is None:
            raise FrameError("INVALID_ARGUMENT", "server did not open with WELCOME")
        self._reasm.bind_session(f.session)
        if self._reasm.feed(raw) is None:
            raise FrameError("INVALID_ARGUMENT", "server did not open with WELCOME")
        return f.session

    def _next_raw(self) -> bytes:
        if self._responses is None:
            raise TransportError("PROTOCOL", "not connected")
        try:
            raw = next(self._responses)
        except StopIteration:
            raise TransportError("UNAVAILABLE", "server closed the stream") from None
        except grpc.RpcError as e:
            raise TransportError(e.code().name, e.details() or "") from None
        self.bytes_in += len(raw)
        return raw

    def receive(self) -> Iterator[Envelope]:
        """Whole server messages, in order, until the stream ends (raises TransportError)."""
        if self._reasm is None:
            raise TransportError("PROTOCOL", "not connected")
        while True:
            raw = self._next_raw()
            try:
                env = self._reasm.feed(raw)
            except FrameError as e:
                self.close()
                raise TransportError("PROTOCOL", e.detail) from None
            if env is not None:
                yield env

    def send(self, kind: Kind, *, round: int = 0, attempt: int = 0, step: int = 0, stage: str = "",
             data: bytes = b"") -> None:
        self._send(kind, self.session, round=round, attempt=attempt, step=step, stage=stage, data=data)

    def _send(self, kind: Kind, session: bytes, *, round: int = 0, attempt: int = 0, step: int = 0,
              stage: str = "", data: bytes = b"") -> None:
        with self._lock:
            out = Outgoing(kind, self._fed, session, round, attempt, step, self._seq + 1, stage, self._pid, data,
                           self._limits)  # raises ValueError (nothing consumed) if data is too large
            self._seq += 1
            self.bytes_out += out.wire_size()
            self._out.put(out)

    def close(self) -> None:
        """End the call, drop the channel and collect the call object now; safe to call twice.

        grpc's call object takes its state lock in __del__. Left for the interpreter's final garbage
        collection, it can meet that lock held by one of grpc's daemon threads, frozen at shutdown, and
        the process never exits (seen here: a party that had reconnected hung after BYE). Cancelling
        and collecting it while those threads still run makes exit safe."""
        self._out.put(_END)
        if self._responses is not None:
            self._responses.cancel()  # no-op on a finished call
            self._responses = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            gc.collect()


def call_status(address: str, tls: TlsFiles, limits: Limits, timeout: float,
                server_name: str | None = None) -> dict:
    with open_channel(address, tls, limits, server_name) as channel:
        try:
            raw = channel.unary_unary(STATUS_METHOD)(b"", timeout=timeout)
        except grpc.RpcError as e:
            raise TransportError(e.code().name, e.details() or "") from None
    status = json.loads(raw)
    if not isinstance(status, dict):
        raise TransportError("PROTOCOL", "status reply is not an object")
    return status
