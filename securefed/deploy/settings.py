"""federation.json: the public description of one federation, identical in every kit.

It pins who may connect (party id + certificate fingerprint), which protocol and settings run, and
the transport limits both ends enforce. It holds no secret. Written once by `provision_federation`,
read by the coordinator, the parties and `fetch_status`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from pydantic import ValidationError

from securefed.errors import ConfigError
from securefed.membership import SamplingConfig, first_error
from securefed.transport.assembly import Limits

FORMAT = "securefed-federation/1"
RESERVED_NAMES = frozenset({"server", "operator", "ca"})
_PARTY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_party_id(pid: str) -> None:
    if not isinstance(pid, str) or not _PARTY_RE.match(pid) or pid.lower() in RESERVED_NAMES:
        raise ConfigError(f"parties: invalid party id {pid!r} (letters, digits, . _ -; max 64; not server/operator/ca)")


@dataclass(frozen=True)
class Timeouts:
    """Seconds. Every wait in the coordinator and the party loop is bounded by one of these."""

    quorum_s: float = 300.0  # wait for min_parties connected parties before a round attempt
    gather_s: float = 2.0  # after quorum, wait this much longer for the rest to connect
    train_s: float = 3600.0  # a selected party must finish local training (READY) within this
    stage_s: float = 120.0  # a party must answer each protocol stage within this
    linger_s: float = 5.0  # after the last round, keep serving FINAL to reconnecting parties
    connect_s: float = 10.0  # party: one connection attempt (TLS handshake included)
    backoff_initial_s: float = 0.2  # party: first reconnect delay, doubled each failure
    backoff_max_s: float = 10.0
    max_connect_attempts: int = 30  # party: consecutive failed connection attempts before giving up

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"timeouts.{f.name}: must be a number >= 0, got {v!r}")
        if self.max_connect_attempts < 1:
            raise ConfigError("timeouts.max_connect_attempts: must be >= 1")


@dataclass(frozen=True)
class PartyEntry:
    id: str
    cert_sha256: str
    key_sha256: str = ""  # the party's key fingerprint (securefed.membership.key_sha256), seeds selection
    protocol_key_sha256: str = ""  # SHA-256 of its protocol public key (checked against the material)
    seed_commit: str = ""  # commitment to its seed contribution, handed in before any reveal
    seed_reveal: str = ""  # the contribution (hex), revealed once every commitment was published


@dataclass(frozen=True)
class FederationConfig:
    federation_id: str  # 32 hex chars (16 random bytes)
    parties: tuple[PartyEntry, ...]  # sorted by id
    server_host: str  # the name parties dial and the server certificate carries
    server_port: int
    server_cert_sha256: str
    operator_cert_sha256: str
    protocol: str
    protocol_config: Any  # JSON value handed to registry.create(protocol, protocol_config)
    rounds: int
    min_parties: int
    max_round_retries: int = 2
    chunk_size: int = 1 << 20
    max_message_bytes: int = 512 << 20
    algorithm: str | None = None
    model: str | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    app: Mapping[str, Any] = field(default_factory=dict)  # free-form settings for the apps

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{32}", self.federation_id):
            raise ConfigError("federation_id: must be 32 lowercase hex characters")
        ids = [p.id for p in self.parties]
        for pid in ids:
            check_party_id(pid)
        if not ids or ids != sorted(set(ids)):
            raise ConfigError("parties: must be a non-empty list of unique ids")
        if not (0 < self.server_port < 65536):
            raise ConfigError(f"port: must be in 1..65535, got {self.server_port}")
        if self.rounds < 1 or not (1 <= self.min_parties <= len(ids)) or self.max_round_retries < 0:
            raise ConfigError("rounds >= 1, 1 <= min_parties <= number of parties, max_round_retries >= 0")
        try:
            Limits(self.chunk_size, self.max_message_bytes)
        except ValueError as e:
            raise ConfigError(f"chunk_size/max_message_bytes: {e}") from None

    @property
    def federation_bytes(self) -> bytes:
        return bytes.fromhex(self.federation_id)

    @property
    def party_ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.parties)

    @property
    def address(self) -> str:
        return f"{self.server_host}:{self.server_port}"

    @property
    def limits(self) -> Limits:
        return Limits(self.chunk_size, self.max_message_bytes)

    def to_json(self) -> str:
        d = asdict(self)
        d = {"format": FORMAT, **d, "parties": [asdict(p) for p in self.parties]}
        return json.dumps(d, indent=2, sort_keys=True) + "\n"


# Keys a caller may set through the federation settings dict of provision_federation.
SETTING_KEYS = frozenset({
    "port", "rounds", "min_parties", "max_round_retries", "chunk_size", "max_message_bytes",
    "algorithm", "model", "timeouts", "app",
})


def apply_settings(base: FederationConfig, settings: Mapping[str, Any]) -> FederationConfig:
    unknown = set(settings) - SETTING_KEYS
    if unknown:
        raise ConfigError(f"federation settings: unknown key(s) {', '.join(sorted(unknown))}")
    kw: dict[str, Any] = {k: v for k, v in settings.items() if k not in ("port", "timeouts", "app")}
    if "port" in settings:
        kw["server_port"] = settings["port"]
    if "timeouts" in settings:
        kw["timeouts"] = _timeouts(settings["timeouts"])
    if "app" in settings:
        kw["app"] = _app(settings["app"])
    for k in ("rounds", "min_parties", "max_round_retries", "chunk_size", "max_message_bytes", "server_port"):
        if k in kw and (not isinstance(kw[k], int) or isinstance(kw[k], bool)):
            raise ConfigError(f"federation settings: {k} must be an integer")
    return replace(base, **kw)


def _app(app: Any) -> dict[str, Any]:
    """The free-form app section, with a protocol-only app's `sampling` written out in full: a
    federation made now names its selection rule, so a later default never changes whom it invites
    (securefed.membership.SelectionRule)."""
    if not isinstance(app, Mapping):
        raise ConfigError("app: must be a mapping")
    app = dict(app)
    if isinstance(app.get("sampling"), Mapping):
        try:
            app["sampling"] = SamplingConfig.model_validate(dict(app["sampling"])).model_dump(mode="json")
        except ValidationError as e:
            raise ConfigError(f"app.sampling.{first_error(e)}") from None
    return app


def _timeouts(d: Any) -> Timeouts:
    if not isinstance(d, Mapping):
        raise ConfigError("timeouts: must be a mapping")
    names = {f.name for f in fields(Timeouts)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"timeouts: unknown key(s) {', '.join(sorted(unknown))}")
    return Timeouts(**d)


def load_federation(path: str | Path) -> FederationConfig:
    path = Path(path)
    if path.is_dir():
        path = path / "federation.json"
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read federation file ({e})") from None
    if not isinstance(d, dict) or d.pop("format", None) != FORMAT:
        raise ConfigError(f"{path}: not a {FORMAT} file")
    try:
        parties = tuple(PartyEntry(str(p["id"]), str(p["cert_sha256"]), str(p.get("key_sha256", "")),
                                   str(p.get("protocol_key_sha256", "")), str(p.get("seed_commit", "")),
                                   str(p.get("seed_reveal", ""))) for p in d.pop("parties"))
        timeouts = _timeouts(d.pop("timeouts"))
        return FederationConfig(parties=parties, timeouts=timeouts, **d)
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{path}: malformed federation file ({e})") from None
