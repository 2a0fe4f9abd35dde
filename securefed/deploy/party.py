"""The party loop: connect (with bounded retries and exponential backoff), then answer the server.

One stream per connection. ROUND_START -> local training -> a fresh protocol session -> READY;
STAGE -> session.handle -> REPLY / NOREPLY, or DROPPED when the session rejects what it got (the
party is out of that round, as in the in-process driver); ROUND_END -> forget the session;
FINAL -> ClientApp.receive_final; BYE -> done. A broken stream loses the round in flight (the
server counts the party as a dropout) and the party reconnects for the next one.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from securefed.deploy.apps import ClientApp, ClientAppFactory, RoundDeclined
from securefed.deploy.kit import Kit, load_party_kit
from securefed.deploy.roster import membership_of
from securefed.deploy.wire import WireError, decode_round_end, decode_round_start
from securefed.membership import MembershipRefused
from securefed.protocols.base import Message, ProtocolError, RoundContext
from securefed.transport.client import PartyLink, TransportError
from securefed.transport.frames import Kind
from securefed.transport.logfmt import kv

_log = logging.getLogger("securefed.deploy.party")

# Wraps each new party session, e.g. to inject faults in tests: (ctx, party id, session) -> session.
SessionHook = Callable[[RoundContext, str, Any], Any]
# Refusals that a reconnect cannot change: a certificate the federation does not pin, a wire version
# the coordinator does not speak.
_FATAL = frozenset({"PERMISSION_DENIED", "UNAUTHENTICATED", "FAILED_PRECONDITION"})


@dataclass(frozen=True)
class ClientSummary:
    party_id: str
    rounds_completed: int  # rounds this party was in when they completed
    final_received: bool
    connections: int


class _Party:
    def __init__(self, kit: Kit, app: ClientApp, hook: SessionHook | None,
                 on_round: Callable[[int], None] | None = None) -> None:
        self.kit, self.app, self.hook = kit, app, hook
        self.on_round = on_round  # progress display: called with each completed round's number
        self.pid = kit.role
        self.protocol, self.material = kit.protocol_and_material()
        self.membership = membership_of(kit.federation)  # who each round invites, derived here
        if hasattr(self.protocol, "bind_party_state"):  # e.g. secagg's round ledger, kept in the kit
            self.protocol.bind_party_state(self.pid, kit.dir, kit.federation.rounds)
        self.session: Any = None
        self.key: tuple[int, int] | None = None  # (round, attempt) of the session
        self.rounds_completed = 0
        self.final = False
        self.progress = False  # did the current connection carry any server message?

    def serve(self, link: PartyLink) -> bool:
        """Answer the server until BYE (True) or the stream ends (False) or fails (raises)."""
        self.session, self.key = None, None
        for env in link.receive():
            self.progress = True
            if env.kind == Kind.ROUND_START:
                self._round_start(link, env.round, env.attempt, env.data)
            elif env.kind == Kind.STAGE:
                self._stage(link, env.round, env.attempt, env.step, Message(env.stage, env.data))
            elif env.kind == Kind.ROUND_END:
                if self.key == (env.round, env.attempt):
                    if decode_round_end(env.data) == "ok":
                        self.rounds_completed += 1
                        if self.on_round is not None:
                            self.on_round(env.round)
                    self.session, self.key = None, None
            elif env.kind == Kind.FINAL:
                self.app.receive_final(env.data)
                self.final = True
            elif env.kind == Kind.BYE:
                return True
            else:
                raise TransportError("PROTOCOL", "unexpected message kind from server")
        return False

    def _round_start(self, link: PartyLink, r: int, attempt: int, data: bytes) -> None:
        self.session, self.key = None, None
        try:
            ctx, payload = decode_round_start(data)
            if ctx.federation_id != self.kit.federation.federation_id or ctx.round != r or self.pid not in ctx.party_ids:
                raise WireError("round context does not match this federation, round or party")
            # Exactly the invited set this party derives itself, at least min_round_size (which also
            # becomes its floor on the surviving contributors): never the server's choice.
            ctx = self.membership.check(dataclasses.replace(ctx, attempt=attempt))
        except (WireError, MembershipRefused) as e:
            _log.warning(kv("round_refused", round=r + 1, reason=str(e)[:120]))
            link.send(Kind.DROPPED, round=r, attempt=attempt, step=0)
            return
        t0 = time.monotonic()
        try:
            inp = self.app.local_update(r, payload, ctx)
            session = self.protocol.party(ctx, self.pid, inp, self.material)
            if self.hook is not None:
                session = self.hook(ctx, self.pid, session)
        except RoundDeclined as e:
            _log.warning(kv("round_declined", round=r + 1, reason=str(e)[:200]))
            link.send(Kind.DROPPED, round=r, attempt=attempt, step=0)
            return
        except ProtocolError:  # the protocol refuses this round (e.g. its ledger: round already used)
            _log.warning(kv("round_refused", round=r, reason="protocol refused the round"))
            link.send(Kind.DROPPED, round=r, attempt=attempt, step=0)
            return
        except Exception:  # a failed local update makes this party a dropout, not a dead process
            _log.exception(kv("local_update_failed", round=r + 1))
            link.send(Kind.DROPPED, round=r, attempt=attempt, step=0)
            return
        self.session, self.key = session, (r, attempt)
        _log.info(kv("trained", round=r + 1, attempt=attempt, seconds=round(time.monotonic() - t0, 3)))
        link.send(Kind.READY, round=r, attempt=attempt, step=0)

    def _stage(self, link: PartyLink, r: int, attempt: int, step: int, msg: Message) -> None:
        if self.session is None or self.key != (r, attempt):
            link.send(Kind.DROPPED, round=r, attempt=attempt, step=step)
            return
        try:
            reply = self.session.handle(msg)
            if reply is None:
                link.send(Kind.NOREPLY, round=r, attempt=attempt, step=step)
            else:
                link.send(Kind.REPLY, round=r, attempt=attempt, step=step, stage=reply.stage, data=reply.payload)
        except (ProtocolError, ValueError):
            # ProtocolError: the server's message failed our checks; ValueError: our reply does not
            # fit the federation's limits. Either way we are out of this round.
            _log.warning(kv("stage_failed", round=r + 1, step=step, stage=msg.stage))
            self.session, self.key = None, None
            link.send(Kind.DROPPED, round=r, attempt=attempt, step=step)


def run_client(
    kit_dir: str | Path,
    client_app_factory: ClientAppFactory,
    *,
    address: str | None = None,
    session_hook: SessionHook | None = None,
    on_round: Callable[[int], None] | None = None,
) -> ClientSummary:
    """Take part in the federation of a party kit until the server says BYE.

    address: where to dial (default server_host:port; the server certificate is always checked
    for server_host). Raises TransportError after max_connect_attempts consecutive attempts
    without progress, or at once when the server refuses this certificate."""
    kit = load_party_kit(kit_dir)
    fed, t = kit.federation, kit.federation.timeouts
    party = _Party(kit, client_app_factory(fed, kit.role), session_hook, on_round)
    failures, delay, connections = 0, t.backoff_initial_s, 0
    while True:
        link = PartyLink(address=address or fed.address, tls=kit.tls, federation_id=fed.federation_bytes,
                         party_id=kit.role, limits=fed.limits, server_name=fed.server_host)
        party.progress = False
        try:
            link.connect(t.connect_s)
            connections += 1
            _log.info(kv("connected", party=kit.role, connection=connections))
            if party.serve(link):
                return ClientSummary(kit.role, party.rounds_completed, party.final, connections)
            err = TransportError("UNAVAILABLE", "server closed the stream")
        except TransportError as e:
            err = e
        finally:
            link.close()
        if err.code in _FATAL:
            raise err
        progress = party.progress
        failures = 0 if progress else failures + 1
        if failures >= t.max_connect_attempts:
            raise TransportError(err.code, f"giving up after {failures} attempts: {err.detail}")
        pause = delay * (1.0 + 0.2 * random.random())  # jitter: parties do not reconnect in lockstep
        _log.info(kv("reconnecting", party=kit.role, code=err.code, in_s=round(pause, 2)))
        time.sleep(pause)
        delay = t.backoff_initial_s if progress else min(delay * 2, t.backoff_max_s)
