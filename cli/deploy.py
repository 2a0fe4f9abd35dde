"""The deployment commands: `provision`, `keygen`, `server`, `client`, `status` (registered on the app
by cli/app.py; one module so the app stays one idea per file)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.console import Console

from securefed.cli.lines import heldout_text, server_round_line
from securefed.errors import UserError


def register(app: typer.Typer, _fail: Callable[[str], None], err: Console) -> None:
    @app.command()
    def provision(
        parties: str = typer.Option(..., "--parties", help="comma-separated party ids, e.g. hospital-a,bank-c"),
        server_host: str = typer.Option(..., "--server-host", help="host name or IP the parties dial"),
        out: Path = typer.Option(..., "--out", "-o", help="new folder for the kits"),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config of the federation"),
        set_: List[str] = typer.Option([], "--set", "-s", help="override: dotted.key=value (repeatable)"),
        port: int = typer.Option(7443, help="coordinator port"),
        max_weight: int = typer.Option(4096, "--max-weight", help="public bound on a party's sample weight"),
        min_parties: Optional[int] = typer.Option(None, "--min-parties", help="quorum per round (default: all)"),
        request: List[Path] = typer.Option([], "--request", "-r",
                                           help="a party's request folder from `securefed keygen` (repeat per party)"),
        local_keys: bool = typer.Option(False, "--local-keys",
                                        help="make every party's keys on this machine (testing only)"),
    ) -> None:
        """Create a federation from the parties' key requests: CA, signed certificates, pinned public keys,
        one public kit per party (to copy next to its keys) and the server's."""
        from securefed.config import load_config
        from securefed.deploy.fl_apps import provision_fl_federation
        from securefed.deploy.keygen import request_party
        from securefed.deploy.provision import KeygenPhasePending

        try:
            cfg = load_config(config, set_)
            ids = [p.strip() for p in parties.split(",") if p.strip()]
            if bool(request) == local_keys:
                raise UserError("give each party's --request folder (made by `securefed keygen` on its machine), "
                                "or --local-keys to make every party's keys here (testing only)")
            requests = None
            if request:
                requests = {}
                for folder in request:
                    pid = request_party(folder)
                    if pid in requests:
                        raise UserError(f"--request {folder} and {requests[pid]} are both party {pid!r}'s request")
                    requests[pid] = folder
            paths = provision_fl_federation(out, ids, server_host, cfg, port=port, max_weight=max_weight,
                                            min_parties=min_parties, requests=requests)
        except KeygenPhasePending as e:
            Console().print(str(e), highlight=False, soft_wrap=True)
            raise typer.Exit(code=0)
        except (UserError, ValueError) as e:
            _fail(str(e))
        Console().print(f"federation {paths.config.federation_id} written to {out}: hand each party its folder "
                        f"({', '.join(sorted(paths.party_dirs))}); keep {paths.ca_dir} offline; "
                        f"run the coordinator from {paths.server_dir}")


    @app.command()
    def keygen(
        party: str = typer.Option(..., "--party", help="this party's id, as the operator will list it"),
        out: Path = typer.Option(..., "--out", "-o", help="new folder for this party's keys (stays on this machine)"),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="the federation's TOML config (protocol)"),
        set_: List[str] = typer.Option([], "--set", "-s", help="override: dotted.key=value (repeatable)"),
        finish: Optional[Path] = typer.Option(None, "--finish", help="second phase: the operator's roster.json (records "
                                              "it, reveals this party's seed contribution; he: deals key shares)"),
    ) -> None:
        """On a party's machine: make its TLS key, certificate request and protocol keys. Only
        <out>/request goes to the operator; copy the kit it sends back into <out>."""
        from securefed.config import load_config
        from securefed.deploy.fl_apps import keygen_fl_finish, keygen_fl_party

        try:
            cfg = load_config(config, set_)
            req = keygen_fl_finish(out, finish, cfg) if finish is not None else keygen_fl_party(out, party, cfg)
            from securefed.deploy.roster import request_fingerprint

            fp = request_fingerprint(req, cfg.aggregation.protocol)
        except (UserError, ValueError) as e:
            _fail(str(e))
        if finish is not None:
            Console().print(f"{party}: phase 2 done from {finish} (roster recorded in {out}, seed contribution "
                            f"revealed); hand {req} to the operator again, who runs the same provision command "
                            f"again; when the kit {party}/ comes back, copy its files into {out}", highlight=False)
        else:
            Console().print(f"{party}: keys in {out} (keep them there); hand {req} to the operator; when its "
                            f"roster.json comes back, run this command again with --finish roster.json; when the "
                            f"kit {party}/ comes back, copy its files into {out}", highlight=False)
        Console().print(f"{party}: key fingerprint {fp} (read it to the other parties out of band)", highlight=False)


    @app.command()
    def server(
        federation: Path = typer.Option(..., "--federation", "-f", help="the server folder from provision"),
        bind: Optional[str] = typer.Option(None, help="listen address (default server_host:port)"),
    ) -> None:
        """Run the coordinator: waits for a quorum, runs the rounds, checkpoints after each."""
        from securefed.deploy.coordinator import RoundFailed, run_server
        from securefed.deploy.fl_apps import FLServerApp

        _logging()
        try:
            from securefed.deploy.settings import load_federation

            rounds = load_federation(federation / "federation.json").rounds
            with _round_progress(rounds, "coordinator", federation) as advance, \
                    _on_interrupt(f"interrupted; the checkpoint after the last completed round is in {federation / 'state'}: "
                                  f"run `securefed server --federation {federation}` again to go on from there"):
                summary = run_server(federation, lambda fed: FLServerApp(fed, out_dir=federation), bind=bind,
                                     on_round=lambda record: advance(server_round_line(record)))
        except (UserError, RoundFailed) as e:
            _fail(str(e))
        Console().print(f"federation finished: {summary.rounds_completed} rounds; adapter in {federation / 'adapter'}; "
                        f"per-round metrics in {federation / 'metrics.jsonl'} (securefed report {federation} --out DIR)",
                        highlight=False)


    @app.command()
    def client(
        kit: Path = typer.Option(..., "--kit", "-k", help="this party's folder from provision"),
        data: str = typer.Option(..., "--data", "-d", help="this party's private data (file, dir or hub id)"),
        address: Optional[str] = typer.Option(None, help="coordinator address (default from the kit)"),
    ) -> None:
        """Take part in a federation as one party; the data never leaves this machine."""
        from securefed.deploy.fl_apps import FLClientApp
        from securefed.deploy.party import run_client
        from securefed.transport.client import TransportError

        _logging()
        try:
            from securefed.deploy.kit import check_party_kit_copied, load_party_kit
            from securefed.deploy.settings import load_federation

            check_party_kit_copied(kit)
            rounds = load_federation(kit / "federation.json").rounds
            apps: list[FLClientApp] = []

            def make_app(fed, pid):
                apps.append(FLClientApp(fed, pid, data, kit))
                return apps[-1]

            def line(r: int) -> str:  # this party's own values: its data, its machine, its log
                own = apps[-1].last_report if apps and apps[-1].last_report.get("round") == r else {}
                text = f"round {r + 1} aggregated"
                if "train_loss" in own:
                    text += f"; my train loss {own['train_loss']:.4g}"
                text += "".join(f", my held-out {item}" for item in heldout_text(own.get("heldout") or {}))
                return text

            with _round_progress(rounds, load_party_kit(kit).role, kit) as advance, \
                    _on_interrupt("interrupted; run the same `securefed client` command again: the party reconnects "
                                  "and rejoins at the coordinator's current round"):  # the party id, not the folder
                summary = run_client(kit, make_app, address=address, on_round=lambda r: advance(line(r)))
        except (UserError, TransportError) as e:
            _fail(str(e))
        dp = ""
        if apps and apps[-1].privacy.example:
            p = apps[-1].cfg.privacy
            dp = f"; example-level DP epsilon {apps[-1].privacy.epsilon():.3g} (delta {p.target_delta:g})"
        shown = heldout_text(apps[-1].final_heldout if apps else {})
        mine = f"; final model on my held-out rows: {', '.join(shown)}" if shown else ""
        Console().print(f"{summary.party_id}: {summary.rounds_completed} rounds; final adapter in "
                        f"{kit / 'final-adapter'}{dp}{mine}")


    @app.command()
    def status(
        federation: Path = typer.Option(..., "--federation", "-f", help="the server folder or a party kit"),
        address: Optional[str] = typer.Option(None, help="coordinator address host:port (default: the one in "
                                              "federation.json)"),
        roster: bool = typer.Option(False, "--roster", help="list every party's key fingerprint from the folder "
                                    "(and whether it matches pinned-fingerprints.txt), and whether every "
                                    "seed reveal opens its commitment; contacts no one"),
    ) -> None:
        """Show the coordinator's round, connected parties, bytes moved and the last round's aggregated
        metrics; when no coordinator answers (finished or down), what the folder's own files say; --roster:
        every member's key fingerprint and the seed's commit-then-reveal state."""
        import json

        from securefed.deploy.status import fetch_status, read_status
        from securefed.transport.client import TransportError

        if roster:
            from securefed.deploy.roster import roster_lines

            try:
                print("\n".join(roster_lines(federation)))
            except UserError as e:
                _fail(str(e))
            return
        try:
            try:
                info = fetch_status(federation, address=address)
            except TransportError as e:
                if e.code not in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                    raise
                info = read_status(federation, "no answer from " + (address or "the address in federation.json"))
        except (UserError, TransportError) as e:
            _fail(str(e))
        Console().print_json(json.dumps(info))


    @contextlib.contextmanager
    def _on_interrupt(message: str):
        try:
            yield
        except KeyboardInterrupt:
            err.print(message, highlight=False)
            raise typer.Exit(code=130) from None


    @contextlib.contextmanager
    def _round_progress(rounds: int, who: str, folder: Path):
        """Completed rounds: a rich bar on a terminal (stderr, beside the structured logs), a line per
        round otherwise; always appended to FOLDER/run.log."""
        from securefed.progress import RunProgress

        with RunProgress(err, folder / "run.log", rounds) as progress:
            task = progress.add_task(f"{who} waiting for the first round", total=rounds)
            yield lambda text: progress.update(task, advance=1, description=f"{who} {text}")


    def _logging() -> None:
        import logging

        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
