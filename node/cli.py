"""``publiek-node``: what an institution's data or IT person runs next to its ticketing data."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import sys
from dataclasses import asdict, replace
from datetime import date
from pathlib import Path

import polars as pl

from node.agent import AgentSettings, ExitCode, NodeAgent
from node.config import (
    EXAMPLE,
    ConfigError,
    NodeConfig,
    load_config,
    missing_tls_files,
    starter_config,
)
from node.data import DataError, load
from node.datasource import DataSetup, SetupError, listed, setup_from_config, setup_from_file
from node.enrol import check_own_certificate, make_request
from node.ingest.mapping import Mapping
from node.ingest.pipeline import DEFAULT_MAX_BAD_SHARE, check_source, quarantined_rows
from node.ingest.problems import DEFAULT_ROWS_SHOWN
from node.ingest.sources import SourceError, file_source
from node.ingest.starter import starter_mapping
from node.ledger import Ledger, LedgerError
from node.preview import preview_plan, read_budget, render
from node.report import write_report
from node.segments import ModelMismatch, SegmentData, audience_by_segment
from node.service import open_node
from node.status import DEFAULT_MAX_SILENCE_S, health, read_status, status_path
from node.tls import TlsConfigError
from protocols.identity import IdentityError
from protocols.logs import LOG_FORMATS, default_log_format, setup_logging
from protocols.messages import ReleaseMode
from protocols.plan import PlanError, load_plan
from protocols.segment_model import ModelError, read_model
from protocols.version import PROTOCOL_VERSION, software_version

DESCRIPTION = """\
Run your institution's publiek node. The node keeps your ticketing data on your premises and
answers the sector coordinator only with differentially private aggregates, within a privacy
budget that you set and that no coordinator can raise. Every answer is recorded in a local
ledger you can inspect at any time.
"""

EPILOG = """\
first steps:
  publiek-node init export.csv               write a starter mapping.toml and node.toml for it
  publiek-node init --institution-id inst-07 make this node's key and a certificate request
                                             for the sector body to sign (enrolment)
  publiek-node check export.csv --mapping mapping.toml
                                             check your data: every problem at once
  publiek-node report --config node.toml --out audience.html
                                             your own audience, exact numbers, stays with you
  publiek-node example-config > node.toml    write a commented configuration to edit
  publiek-node preview plan.toml --config node.toml
                                             what a plan would release, at what cost, and
                                             whether your policy and budget accept it
  publiek-node run --config node.toml        connect to the coordinator and answer tasks
  publiek-node ledger --config node.toml     see what left this node, and what budget remains
  publiek-node health --config node.toml     is the running node connected? (exit 0 / 1)

exit codes: 0 done (check: the data passed; preview: everything acceptable), 1 check: the
data failed (preview: something would be refused), 2 configuration, plan or data problem,
3 incompatible with the coordinator (protocol version, identity), 4 gave up reaching the
coordinator (--max-attempts), 70 an internal error (a bug: please report it).
"""


def _setup_logging(level: str, institution_id: str = "", log_format: str = "text") -> None:
    fields = {"institution": institution_id} if institution_id else None
    setup_logging("publiek-node", level, log_format, fields=fields)


def _fail(message: str, code: int = 2) -> int:
    print(f"publiek-node: {message}", file=sys.stderr)
    return code


def _fail_listed(heading: str, problems: list[str], code: int = 2) -> int:
    """Several problems one per line under what they are about (one stays on one line)."""
    return _fail(listed(heading, problems), code)


def _cmd_run(args: argparse.Namespace) -> int:
    config: NodeConfig = load_config(args.config)
    _setup_logging(args.log_level, config.institution_id, args.log_format)
    log = logging.getLogger("publiek.node")
    if config.tls is None:
        log.warning(
            "TLS IS OFF (tls.insecure = true): answers travel in plaintext and the coordinator"
            " cannot verify who you are. Use this only for a local demo, never with real data."
        )
    else:
        missing = missing_tls_files(config.tls)
        if missing:
            raise ConfigError(str(args.config), missing)
        # The coordinator checks this certificate too, but cannot tell this node why it refuses
        # one at the TLS handshake: check it here first, before loading any data.
        for warning in check_own_certificate(
            config.institution_id, config.tls.ca, config.tls.cert, config.tls.key
        ):
            log.warning("%s", warning, extra={"event": "certificate_expiring"})
    service = open_node(config, args.config)
    handler, ledger = service.handler, service.ledger
    settings = AgentSettings(
        address=config.address,
        tls=config.tls,
        server_name=config.server_name,
        max_attempts=args.max_attempts,
        status_file=status_path(config.ledger_path),
    )
    agent = NodeAgent(settings, handler)

    async def main() -> ExitCode:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, agent.stop)
        return await agent.run()

    try:
        return int(asyncio.run(main()))
    finally:
        ledger.close()


def _cmd_ledger(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    ledger = Ledger(config.ledger_path, config.cap)
    try:
        entries = ledger.entries()
        print(f"Ledger of {config.institution_id}: {config.ledger_path}")
        print(
            f"Budget cap: {config.cap}; spent this period: rho {ledger.spent()};"
            f" remaining: rho {ledger.remaining()}"
        )
        if not entries:
            print("Nothing has left this node yet.")
        else:
            print(f"{'charged at (UTC)':<19}  {'status':<9} {'rho':>7}  {'for':<24} what")
            for e in entries:
                when = e.charged_at.replace("T", " ")[:19]
                print(
                    f"{when:<19}  {e.status:<9} {e.rho!s:>7}  {e.requester[:24]:<24}"
                    f" {e.description} [task {e.task_id}]"
                )
        refusals = ledger.refusals()
        if refusals:
            print(f"\nRefused requests ({len(refusals)}):")
            for r in refusals:
                when = r.refused_at.replace("T", " ")[:19]
                print(f"{when:<19}  {r.code:<16} {r.requester[:24]:<24} {r.reason}")
    finally:
        ledger.close()
    return 0


def _setup(args: argparse.Namespace) -> DataSetup:
    """The data to read: a file given on the command line, or the configured source."""
    if args.config is not None:
        return setup_from_config(load_config(args.config), args.path, args.mapping)
    if args.path is None:
        raise ConfigError("command line", ["give a data file, or --config with a [data] section"])
    share = DEFAULT_MAX_BAD_SHARE if args.max_bad_share is None else args.max_bad_share
    return setup_from_file(args.path, args.mapping, args.country, share)


def _cmd_check(args: argparse.Namespace) -> int:
    setup = _setup(args)
    if args.max_bad_share is not None:
        setup = replace(setup, settings=replace(setup.settings, max_bad_share=args.max_bad_share))
    checking = check_source(setup.source, setup.settings)
    report = checking.report
    advice: tuple[str, ...] = ()
    if setup.settings.mapping.origin == Mapping().origin and any(
        e.startswith("required column") for e in report.file_errors
    ):
        advice = (
            "without a mapping the export must use the canonical column names"
            " (docs/node-data.md). Run `publiek-node init"
            f" {args.path or 'FILE'}` to write a mapping.toml for your columns, then pass"
            " --mapping mapping.toml",
        )
    text = report.format(max_rows=None if args.all else DEFAULT_ROWS_SHOWN, advice=advice)
    if args.problems is not None and not report.problems.is_empty():
        report.write_problems_csv(args.problems)
        text += f"\nevery problem, one per line: {args.problems}"
    if args.quarantine is not None and report.quarantined:
        _write_private_csv(quarantined_rows(checking), args.quarantine)
        text += (
            f"\nquarantined rows as read (personal data: keep this file on your premises):"
            f" {args.quarantine}"
        )
    if setup.settings.match_key is not None:
        # Every node of the sector must show the same one (docs/reach.md).
        text += f"\nmatch-key fingerprint: {setup.settings.match_key.fingerprint}"
    # The report goes to standard output, pass or fail, so that `> report.txt` keeps it; a
    # failure also says so in one line on standard error, which stays on the screen.
    print(text)
    if not report.passed:
        print(f"publiek-node: check {report.source}: {report.verdict()}", file=sys.stderr)
    return 0 if report.passed else 1


def _write_private_csv(frame: pl.DataFrame, path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        frame.write_csv(fh)


def _cmd_report(args: argparse.Namespace) -> int:
    model = read_model(args.segments) if args.segments is not None else None
    setup = _setup(args)
    as_of = args.as_of or setup.as_of
    loaded = load(setup.source, setup.settings, setup.geography, as_of)
    title = args.title or (
        f"Audience of {load_config(args.config).institution_id}"
        if args.config is not None
        else f"Audience in {Path(setup.source.display).name}"
    )
    out = write_report(loaded, args.out, title, model)
    print(
        f"wrote {out}: {loaded.table.rows:,} ticket lines, {loaded.features.customers:,}"
        f" customers as of {loaded.features.as_of}. It holds exact numbers: keep it on your"
        " premises."
    )
    if loaded.report.quarantined:
        print(f"note: {loaded.report.quarantined:,} row(s) were quarantined (publiek-node check)")
    return 0


def _cmd_segments(args: argparse.Namespace) -> int:
    """Apply a segmentation model to your own customers, here; nothing is sent."""
    model = read_model(args.model)
    setup = _setup(args)
    loaded = load(setup.source, setup.settings, setup.geography, args.as_of or setup.as_of)
    rows = audience_by_segment(model, SegmentData.from_features(loaded.features))
    if args.json:
        print(json.dumps([{**asdict(r), "index": r.index} for r in rows], indent=2))
        return 0
    total = sum(r.customers for r in rows)
    print(
        f"{model.title or model.model_id}: {total:,} customers with an account, as of"
        f" {loaded.features.as_of} (applied on this machine; nothing was sent)"
    )
    print(f"{'segment':<12} {'customers':>10} {'share':>7} {'sector':>7} {'index':>6}  label")
    for r in rows:
        sector = f"{r.sector_share:7.1%}" if r.sector_share is not None else f"{'-':>7}"
        index = f"{r.index:6.0f}" if r.index is not None else f"{'-':>6}"
        print(f"{r.key:<12} {r.customers:>10,} {r.share:7.1%} {sector} {index}  {r.label}")
    return 0


def _cmd_preview(args: argparse.Namespace) -> int:
    try:
        plan = load_plan(args.plan)
    except PlanError as err:
        print(f"publiek-node: the plan cannot be used: {err}", file=sys.stderr)
        return 2
    config = load_config(args.config)
    # Secure rounds need at least two participants, and n_min of them must survive.
    participants = args.participants or max(plan.min_nodes, 2)
    if plan.mode is ReleaseMode.SECURE and participants < max(plan.min_nodes, 2):
        return _fail(
            f"--participants {participants} is below what the plan needs"
            f" (min_nodes {plan.min_nodes}, and a secure round needs at least 2)"
        )
    table = None
    if args.show_values:
        setup = setup_from_config(config)
        loaded = load(setup.source, setup.settings, setup.geography, setup.as_of)
        table = replace(loaded.table, institution_region=config.institution_region)
    preview = preview_plan(plan, config, participants, read_budget(config), table)
    print(render(preview, args.plan))
    return 0 if preview.accepted else 1


def _cmd_health(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    path = status_path(config.ledger_path)
    try:
        status = read_status(path)
    except ValueError as err:
        print(f"publiek-node health: {err}", file=sys.stderr)
        return 1
    healthy, line = health(status, max_silence_s=args.max_silence)
    print(line, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


def _cmd_enrol(args: argparse.Namespace) -> None:
    """The key and certificate request of ``init --institution-id``."""
    enrolment = make_request(args.institution_id, args.key_out, args.csr_out, args.organisation)
    print(f"wrote {enrolment.key} (this node's private key: it never leaves this machine)")
    print(
        f"wrote {enrolment.request} (a certificate request for {args.institution_id!r}):"
        " send it to the sector body, who signs it with"
    )
    print(f"  publiek-coordinator ca sign ca/ {enrolment.request.name}")
    print(
        "and sends back the certificate and the sector CA certificate (ca.pem); put them where"
        " [tls] in node.toml points (cert, ca)"
    )


def _cmd_init(args: argparse.Namespace) -> int:
    if args.institution_id is None and args.path is None:
        raise ConfigError(
            "init",
            [
                "give an export to write a mapping and configuration for, or --institution-id"
                " to make this node's key and certificate request (or both)"
            ],
        )
    if args.path is None:
        _cmd_enrol(args)
        return 0
    data_path: Path = args.path
    mapping_path: Path = args.mapping_out
    config_path: Path = args.config_out
    existing = [p for p in (mapping_path, config_path) if p.exists()]
    if existing and not args.force:
        names = ", ".join(str(p) for p in existing)
        raise ConfigError("init", [f"{names} already exist(s): pass --force to replace"])
    if args.institution_id is not None:
        _cmd_enrol(args)
    source = file_source(data_path)
    try:
        starter = starter_mapping(source, str(data_path))
    except SourceError as err:
        raise DataError(data_path, err.problems) from err
    mapping_path.write_text(starter.mapping_toml, encoding="utf-8")
    base = config_path.resolve().parent
    text = starter_config(_relative(data_path, base), _relative(mapping_path, base))
    if args.institution_id is not None:
        text = _with_identity(text, args.institution_id, args.key_out, base)
    config_path.write_text(_mark_guesses(text), encoding="utf-8")
    print(f"looked at {data_path}:")
    for line in starter.summary:
        print(f"  {line}")
    print(f"wrote {mapping_path} (how your export maps onto ticket_line; check every guess)")
    print(
        f"wrote {config_path} (the node configuration; fill in identity and coordinator, and"
        " check the guessed institution_type and institution_region)"
    )
    print(f"next: publiek-node check {data_path} --mapping {mapping_path}")
    return 0


def _mark_guesses(text: str) -> str:
    """The example's institution type and region, marked like init's other guesses: left as
    they are, every ticket of a Flemish house would be filed under Noord-Holland."""
    return re.sub(
        r'^(institution_(?:type|region) = "[^"]*"\s+# )', r"\1guessed: check; ", text, flags=re.M
    )


def _with_identity(text: str, institution_id: str, key: Path, base: Path) -> str:
    """The starter configuration with this institution's id and key file filled in."""
    text = text.replace(
        'institution_id = "inst-01"          # as in your certificate',
        f"institution_id = {json.dumps(institution_id)}    # as in your certificate",
    )
    return text.replace('key = "certs/node.key"', f"key = {json.dumps(_relative(key, base))}")


def _relative(path: Path, base: Path) -> str:
    full = path.resolve()
    try:
        return str(full.relative_to(base))
    except ValueError:
        return str(full)


def _data_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "path", type=Path, nargs="?", help="ticket export (CSV or Parquet); default: the config's"
    )
    cmd.add_argument("--mapping", type=Path, help="mapping file (TOML) for the export's columns")
    cmd.add_argument("--config", type=Path, help="node configuration: data source, mapping, keys")
    cmd.add_argument(
        "--country", default="NL", help="country of rows without one (without --config)"
    )
    cmd.add_argument(
        "--max-bad-share",
        type=_share,
        default=None,
        metavar="X",
        help="largest share of rows with problems that still passes (default 0.01)",
    )


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text}")
    return value


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date like 2024-12-31, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="publiek-node",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"publiek-node {software_version()} (protocol v{PROTOCOL_VERSION})",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="connect to the coordinator and answer its tasks until stopped",
        description="Connect to the coordinator (reconnecting with backoff when the connection"
        " drops) and answer tasks within your budget. Stop with Ctrl-C or SIGTERM.",
    )
    run.add_argument("--config", type=Path, required=True, help="node configuration (TOML)")
    run.add_argument(
        "--max-attempts",
        type=int,
        default=None,
        metavar="N",
        help="give up after N failed connection attempts in a row (default: keep trying)",
    )
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument(
        "--log-format",
        default=default_log_format(),
        choices=LOG_FORMATS,
        help="text, or json: one object a line (default: $PUBLIEK_LOG_FORMAT or text)",
    )
    run.set_defaults(func=_cmd_run)

    hl = sub.add_parser(
        "health",
        help="is the running node connected to the coordinator? (exit 0 yes, 1 no)",
        description="Read the status the running node keeps next to its ledger: exit 0 when it"
        " is connected and wrote its status recently, 1 otherwise, with one line saying why."
        " For container health checks and monitoring.",
    )
    hl.add_argument("--config", type=Path, required=True, help="node configuration (TOML)")
    hl.add_argument(
        "--max-silence",
        type=float,
        default=DEFAULT_MAX_SILENCE_S,
        metavar="S",
        help="unhealthy when the status is older than S seconds"
        f" (default {DEFAULT_MAX_SILENCE_S:.0f})",
    )
    hl.set_defaults(func=_cmd_health)

    led = sub.add_parser(
        "ledger",
        help="list every release that left this node and the budget that remains",
    )
    led.add_argument("--config", type=Path, required=True, help="node configuration (TOML)")
    led.set_defaults(func=_cmd_ledger)

    pre = sub.add_parser(
        "preview",
        help="show what a plan would release, at what cost, and whether your policy accepts it",
        description="Read a plan and show, for every analysis, exactly what this node would"
        " release (statistic, measure, table, contribution bound, mode), its privacy cost and"
        " the noise this node adds, what is left of your budget, and whether your policy"
        " accepts it. Nothing is sent and nothing is spent. Exit 0: everything acceptable;"
        " 1: something would be refused; 2: the plan or configuration cannot be used.",
    )
    pre.add_argument("plan", type=Path, help="the plan (TOML), as the sector body sent it")
    pre.add_argument("--config", type=Path, required=True, help="node configuration (TOML)")
    pre.add_argument(
        "--participants",
        type=_positive,
        default=None,
        metavar="N",
        help="secure mode: how many institutions you expect to take part (default: the"
        " plan's min_nodes); the noise share each adds depends on it",
    )
    pre.add_argument(
        "--show-values",
        action="store_true",
        help="also print your own exact, contribution-bounded tables (read from your data;"
        " they never leave this machine)",
    )
    pre.set_defaults(func=_cmd_preview)

    ex = sub.add_parser("example-config", help="print a commented configuration file")
    ex.set_defaults(func=lambda _args: print(EXAMPLE, end="") or 0)

    init = sub.add_parser(
        "init",
        help="write a starter mapping and configuration by looking at an export; with"
        " --institution-id, make this node's key and certificate request",
        description="Look at an export's header and first rows and write a commented mapping"
        " (columns and house codes onto ticket_line) and a node configuration that uses it."
        " Every guess is marked for you to check. With --institution-id (with or without an"
        " export), also make this node's private key and a certificate request bound to that"
        " id, for the sector body to sign (publiek-coordinator ca sign).",
    )
    init.add_argument("path", type=Path, nargs="?", help="your ticket export (CSV or Parquet)")
    init.add_argument(
        "--institution-id",
        metavar="ID",
        help="the id the sector body gave your institution: make a key and certificate request",
    )
    init.add_argument(
        "--key-out", type=Path, default=Path("certs/node.key"), metavar="FILE",
        help="where the new private key goes (default certs/node.key; never overwritten)",
    )  # fmt: skip
    init.add_argument(
        "--csr-out", type=Path, default=Path("certs/node.csr"), metavar="FILE",
        help="where the certificate request goes (default certs/node.csr)",
    )  # fmt: skip
    init.add_argument("--organisation", help="your institution's name, shown in the certificate")
    init.add_argument("--mapping-out", type=Path, default=Path("mapping.toml"), metavar="FILE")
    init.add_argument("--config-out", type=Path, default=Path("node.toml"), metavar="FILE")
    init.add_argument("--force", action="store_true", help="replace files that exist")
    init.set_defaults(func=_cmd_init)

    chk = sub.add_parser(
        "check",
        help="check an export: every problem at once, nothing sent anywhere",
        description="Read and check your data the way the node will: exit 0 with a summary when"
        " it can be used, 1 with every problem (file, row, column, reason) when it cannot.",
    )
    _data_arguments(chk)
    chk.add_argument(
        "--all", action="store_true", help="list every problem row (default: 20 a kind)"
    )
    chk.add_argument("--problems", type=Path, metavar="FILE", help="write every problem as CSV")
    chk.add_argument(
        "--quarantine",
        type=Path,
        metavar="FILE",
        help="write the quarantined rows as read, with their problems (personal data: keep local)",
    )
    chk.set_defaults(func=_cmd_check)

    rep = sub.add_parser(
        "report",
        help="write your own audience report (HTML, exact numbers, stays on your premises)",
        description="Write a self-contained HTML report of your own audience from your own"
        " data, with exact numbers. Nothing is sent anywhere and the file loads nothing.",
    )
    _data_arguments(rep)
    rep.add_argument("--out", type=Path, required=True, metavar="FILE", help="the HTML file")
    rep.add_argument("--as-of", type=_date, metavar="DATE", help="measure customers at this date")
    rep.add_argument("--title", help="the report's title")
    rep.add_argument(
        "--segments",
        type=Path,
        metavar="MODEL",
        help="add your audience by segment of this model (the sector's segment-model-*.json)",
    )
    rep.set_defaults(func=_cmd_report)

    seg = sub.add_parser(
        "segments",
        help="your customers by segment of a segmentation model (applied here, nothing is sent)",
        description="Apply a segmentation model (a segment-model-*.json from a sector release,"
        " or any model in that format) to your own customers, on this machine, and show your"
        " audience by segment next to the sector's shares. Nothing is sent anywhere.",
    )
    seg.add_argument("model", type=Path, help="the model file (JSON)")
    _data_arguments(seg)
    seg.add_argument("--as-of", type=_date, metavar="DATE", help="measure customers at this date")
    seg.add_argument("--json", action="store_true", help="print JSON instead of a table")
    seg.set_defaults(func=_cmd_segments)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DataError as err:
        if err.report is not None:
            print(err.report.format(), file=sys.stderr)
            return _fail("the data cannot be used (see above)")
        return _fail(str(err))
    except SetupError as err:
        # Each file the configuration names, with its own problems under its name.
        for heading, problems in err.sections.items():
            _fail_listed(heading, problems)
        return 2
    except ConfigError as err:
        # Its text is "<what>: p1; p2": the problems go one a line under <what>.
        joined = "; ".join(err.problems)
        heading = str(err).removesuffix(joined).removesuffix(": ")
        return _fail_listed(heading, err.problems)
    except (
        LedgerError,
        TlsConfigError,
        IdentityError,
        PlanError,
        ModelError,
        ModelMismatch,
    ) as err:
        return _fail(str(err))
    except OSError as err:
        return _fail(f"{err.filename or ''}: {err.strerror or err}".lstrip(": "))
    except Exception as err:  # our bug: one clear line, the detail only when asked for
        if os.environ.get("PUBLIEK_DEBUG"):
            raise
        return _fail(
            f"internal error ({type(err).__name__}: {err}). This is a bug in publiek-node;"
            " please report it. PUBLIEK_DEBUG=1 shows the details.",
            code=70,
        )
    except KeyboardInterrupt:
        return int(ExitCode.STOPPED)


if __name__ == "__main__":
    raise SystemExit(main())
