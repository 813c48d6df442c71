"""``publiek-coordinator``: what the sector body runs to ask questions and publish answers."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

from coordinator.ca import CaError
from coordinator.ca_cli import add_ca_parser
from coordinator.health import HealthUsageError, add_health_parser
from coordinator.publish import publish
from coordinator.registry import NodeRegistry
from coordinator.release import ReleaseExists, write_release
from coordinator.runner import Progress, RunAborted, RunSettings, new_run_id, run_plan
from coordinator.server import CoordinatorServer, ServerTls, TlsConfigError
from coordinator.sqlitefile import STATE_FORMAT, STORE_FORMAT, CoordinatorFileError, missing_file
from coordinator.state import NodeSnapshot, RunRecord, RunStateStore
from coordinator.store import ExportFormat, ReleaseStore, write_exclusive
from privacy.budget import Rho
from privacy.clustering.budget import Schedule
from protocols.identity import PeerVerifier
from protocols.logs import LOG_FORMATS, default_log_format, setup_logging
from protocols.messages import MAX_CELLS, ReleaseMode
from protocols.plan import EXAMPLE, Plan, PlanError, load_plan
from protocols.version import PROTOCOL_VERSION, software_version

# Where the coordinator keeps its state and its releases unless told otherwise: files in the
# folder it is started from, so that `run` and then `status`, `releases`, `export` or `serve`
# in the same folder find each other without options.
DEFAULT_STATE = Path("publiek-state.sqlite")
DEFAULT_STORE = Path("publiek-releases.sqlite")
# The store `make demo` writes (seen from the repository): suggested when there is no store.
DEMO_STORE = Path("demo-output/releases.sqlite")

# How often a running coordinator records its nodes and that it is alive; a run whose
# coordinator has been silent for RUN_STALE_S is shown as interrupted, a node not heard from for
# NODE_STALE_S as of unknown connection (nodes send a heartbeat every 10 s).
RECORD_INTERVAL_S = 5.0
RUN_STALE_S = 30.0
NODE_STALE_S = 60.0

DESCRIPTION = """\
Coordinate a publiek federation. Nodes at the institutions dial in to this coordinator; it sends
them the analyses of a plan, adds up their differentially private answers, and publishes a
release (JSON and CSV, with error bars and full provenance) into its release store.
It never receives personal data.
"""

EPILOG = """\
first steps:
  publiek-coordinator example-plan > plan.toml       write a commented plan to edit
  publiek-coordinator check-plan plan.toml           validate it (every problem at once)
  publiek-coordinator run plan.toml --listen 0.0.0.0:50051 \\
      --ca ca.pem --cert coordinator.pem --key coordinator.key \\
      --expect-nodes 12 --out releases/2024-s1     run it once enough nodes are connected
  publiek-coordinator status                         runs and nodes (from another terminal)
  publiek-coordinator releases                       every release stored
  publiek-coordinator export demo-s1-2024 --csv out/ the latest release of a plan, as CSV
  publiek-coordinator serve                          the dashboard on http://127.0.0.1:8000/

state: runs and nodes in publiek-state.sqlite, releases in publiek-releases.sqlite, in the
current folder unless --state / --store say otherwise (for every command that uses them).

exit codes: 0 done (release written), 1 run aborted (too few nodes, nothing releasable) or
interrupted, 2 configuration, plan, TLS, state or store problem, 70 internal error (a bug:
please report it).
"""


class UsageError(ValueError):
    pass


def _tls(args: argparse.Namespace) -> ServerTls | None:
    given = [a for a in ("ca", "cert", "key", "crl") if getattr(args, a, None) is not None]
    if args.insecure and given:
        raise UsageError(
            "--insecure conflicts with --" + ", --".join(given) + ": choose TLS or plaintext"
        )
    if args.insecure:
        return None
    if len([a for a in given if a != "crl"]) != 3:
        raise UsageError(
            "mutual TLS needs --ca, --cert and --key (or --insecure for a local demo only)"
        )
    return ServerTls(ca=args.ca, cert=args.cert, key=args.key, crl=getattr(args, "crl", None))


def _lock_path(state: Path) -> Path:
    return state.with_name(state.name + ".lock")


@contextlib.contextmanager
def _sole_coordinator(state: Path) -> Iterator[None]:
    """Hold an exclusive lock on the state file for as long as this coordinator runs.

    The operating system drops the lock when the process ends, however it ends (SIGKILL, power
    cut), so a coordinator that gets the lock knows that no other one is running on this state:
    an unfinished run in it was interrupted and is safe to resume. A heartbeat could not tell a
    coordinator killed a second ago from a live one.
    """
    path = _lock_path(state)
    with path.open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise UsageError(
                f"another publiek-coordinator is running with the state file {state};"
                " stop it first, or give this one another --state"
            ) from err
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _coordinator_running(state: Path) -> bool:
    """Does a coordinator hold this state file's lock right now?"""
    path = _lock_path(state)
    if not path.exists():
        return False
    with path.open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def _start_run(state: RunStateStore, plan: Plan, progress: Progress) -> str:
    """The run id to run the plan under, recorded in the state file.

    Called holding the state file's lock: an unfinished run of this same plan (same text, same
    hash) was interrupted, and is resumed: the runner skips what it finished and no node is
    charged twice.
    """
    earlier = state.unfinished_run(plan.sha256)
    run_id = new_run_id(plan)
    if earlier is not None:
        record = next(r for r in state.runs() if r.run_id == earlier)
        run_id = earlier
        progress(
            f"resuming run {earlier} (interrupted; last progress"
            f" {ago(time.time() - record.updated_at)}, {_progress_text(record)})"
        )
    state.begin_run(run_id, plan.id, plan.sha256, plan.source_text)
    return run_id


def _released_before(
    state: RunStateStore, store: ReleaseStore, plan: Plan, out: Path, progress: Progress
) -> bool:
    """Finish the steps of a run that was stored but not marked released (the coordinator was
    stopped in between): without this, resuming it would publish a second release of it."""
    earlier = state.unfinished_run(plan.sha256)
    if earlier is None:
        return False
    stored = [r for r in store.list() if r.run_id == earlier]
    if not stored:
        return False
    release_id = stored[-1].release_id
    state.finish_run(earlier, "released", release_id)
    progress(f"run {earlier} was released already as {stored[-1].ref} ({release_id})")
    if not (out / "release.json").exists():
        doc = store.get(release_id).document()
        paths = write_release(doc, out)
        progress(f"release {release_id} written: " + ", ".join(str(p) for p in paths))
    return True


def _snapshots(registry: NodeRegistry, known: dict[str, NodeSnapshot]) -> list[NodeSnapshot]:
    """Snapshots of the nodes connected now, and of those seen earlier that have gone."""
    seen = registry.last_seen()
    current = registry.nodes()
    for info in current:
        known[info.institution_id] = NodeSnapshot(
            institution_id=info.institution_id,
            software_version=info.software_version,
            protocol_version=info.protocol_version,
            capabilities=tuple(info.capabilities),
            connected=True,
            connected_at=info.connected_at,
            last_seen=seen.get(info.institution_id, info.connected_at),
        )
    here = {i.institution_id for i in current}
    for nid, snap in known.items():
        if nid not in here and snap.connected:
            known[nid] = replace(snap, connected=False)
    return list(known.values())


async def _record_while_running(
    registry: NodeRegistry, state: RunStateStore, run_id: str, known: dict[str, NodeSnapshot]
) -> None:
    """Every few seconds: which nodes are there, and that this coordinator is alive."""
    log = logging.getLogger("publiek.coordinator")
    while True:
        snaps = _snapshots(registry, known)
        try:
            # Off the event loop: a synchronous commit waits for the disk.
            await asyncio.to_thread(state.record_nodes, snaps)
            await asyncio.to_thread(state.heartbeat, run_id)
        except CoordinatorFileError as err:
            # A status snapshot is not worth stopping a run for; say so and keep going.
            log.warning("could not record nodes in %s: %s", state.path, err)
        await asyncio.sleep(RECORD_INTERVAL_S)


async def _run(args: argparse.Namespace) -> int:
    plan = load_plan(args.plan)
    tls = _tls(args)
    out: Path = args.out
    if (out / "release.json").exists():
        raise ReleaseExists(f"{out / 'release.json'} exists; releases are immutable: pick --out")
    log = logging.getLogger("publiek.coordinator")
    if tls is None:
        log.warning(
            "TLS IS OFF (--insecure): nodes are not authenticated and traffic is plaintext."
            " Use this only for a local demo."
        )
    started = time.monotonic()
    json_logs = getattr(args, "log_format", "text") == "json"

    def progress(message: str) -> None:
        if json_logs:  # one stream of JSON lines for the log pipeline, progress included
            log.info("%s", message, extra={"event": "progress"})
            return
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    # Both files are opened before the server listens, so a bad --state or --store stops the
    # coordinator before any node is asked anything.
    with (
        _sole_coordinator(args.state),
        RunStateStore(args.state) as state,
        ReleaseStore(args.store) as store,
    ):
        if _released_before(state, store, plan, out, progress):
            return 0
        registry = NodeRegistry()
        server = CoordinatorServer(registry, args.coordinator_id, tls=tls)
        port = await server.start(args.listen)
        # Signals are caught from here on: before the port is announced, so whoever waits for
        # the port file (a service manager, a test) can stop the run cleanly at once.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        known: dict[str, NodeSnapshot] = {}
        run_id: str | None = None
        recorder: asyncio.Task[None] | None = None
        try:
            host = args.listen.rsplit(":", 1)[0]
            progress(
                f"listening on {host}:{port} ({'mTLS' if tls else 'PLAINTEXT'}),"
                f" plan {plan.id!r} with {len(plan.analyses)} analysis(es),"
                f" rho {plan.rho_per_node} per node"
            )
            run_id = _start_run(state, plan, progress)
            # Written once the run is recorded: whoever waits for the port (a script, a test)
            # can ask `status` about the run straight away.
            if args.port_file:
                args.port_file.write_text(f"{port}\n", encoding="utf-8")
            recorder = asyncio.create_task(_record_while_running(registry, state, run_id, known))
            return await _run_and_publish(
                args, plan, tls, run_id, registry, state, store, progress, stop
            )
        finally:
            if recorder is not None:
                recorder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await recorder
                _snapshots(registry, known)  # the last contacts, while the sessions exist
            await server.stop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            if run_id is not None:
                try:
                    # The server is down: every node this run saw is disconnected now, and no
                    # coordinator runs this run any more.
                    state.record_nodes([replace(n, connected=False) for n in known.values()])
                    state.heartbeat(run_id, alive=False)
                except CoordinatorFileError as err:
                    log.warning("could not record the stop in %s: %s", state.path, err)


async def _run_and_publish(
    args: argparse.Namespace,
    plan: Plan,
    tls: ServerTls | None,
    run_id: str,
    registry: NodeRegistry,
    state: RunStateStore,
    store: ReleaseStore,
    progress: Progress,
    stop: asyncio.Event,
) -> int:
    settings = RunSettings(
        coordinator_id=args.coordinator_id,
        wait_for_nodes=args.expect_nodes or plan.min_nodes,
        wait_timeout_s=args.wait_s,
        run_id=run_id,
        state=state,
        # With mTLS the coordinator checks nodes' signed round keys too and drops forgeries
        # early (the nodes check each other regardless).
        verifier=PeerVerifier.from_file(tls.ca, tls.crl) if tls is not None else None,
    )
    job = asyncio.create_task(run_plan(plan, registry, settings, progress))
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({job, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if job not in done:
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
            # Left unfinished on purpose: an interrupted run is what resuming picks up.
            progress(f"interrupted; nothing released; run {run_id} stays unfinished")
            return 1
        try:
            doc = job.result()
        except RunAborted as err:
            state.finish_run(run_id, "aborted", None)
            progress(f"run aborted: {err}")
            return 1
        return publish(
            doc, run_id=run_id, store=store, state=state, out=args.out, progress=progress
        )
    finally:
        stopper.cancel()


def _cmd_run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


def _is_live(run: RunRecord, now: float) -> bool:
    """Is a coordinator still running this run (it said so within RUN_STALE_S)?"""
    return run.status == "running" and run.alive_at is not None and now - run.alive_at < RUN_STALE_S


def _shown_status(run: RunRecord, now: float, coordinator_running: bool = True) -> str:
    # Unfinished and nobody holds the state file (or its coordinator has gone silent).
    if run.status == "running" and not (coordinator_running and _is_live(run, now)):
        return "interrupted"
    return run.status


def _connection(node: NodeSnapshot, now: float) -> str:
    if not node.connected:
        return "no"
    return "yes" if now - node.last_seen < NODE_STALE_S else "unknown"


def ago(seconds: float) -> str:
    """A duration in the past as a person says it: "12 s ago", "4 min ago", "3 h ago"."""
    s = max(0.0, seconds)
    if s < 90:
        return f"{s:.0f} s ago"
    if s < 90 * 60:
        return f"{s / 60:.0f} min ago"
    if s < 36 * 3600:
        return f"{s / 3600:.0f} h ago"
    return f"{s / 86400:.0f} days ago"


def _utc(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _progress_text(run: RunRecord) -> str:
    text = f"{run.done}/{run.total} done"
    return text + (f", {run.failed} failed" if run.failed else "")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [headers, *rows]
    return "\n".join(
        "  " + "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _require_state(path: Path) -> None:
    """A state file that is not there: say which option names it (opening would say only
    that it is missing)."""
    if not path.exists():
        raise UsageError(
            f"{missing_file(path, STATE_FORMAT)}: give --state FILE, the file the coordinator"
            f" runs with (`run` keeps {DEFAULT_STATE} in the folder it is started from unless"
            " --state says otherwise)"
        )


def _require_store(path: Path, *, demo: bool = False) -> None:
    """A release store that is not there: say which option names it, and where a store is
    (the demo's, seen from the repository; ``demo``: also how to make it)."""
    if path.exists():
        return
    hint = (
        f"give --store FILE, the coordinator's release store (`run` writes {DEFAULT_STORE} in"
        " the folder it is started from unless --store says otherwise)"
    )
    if DEMO_STORE.exists() and path.resolve() != DEMO_STORE.resolve():
        hint += f"; the demo's store is here: --store {DEMO_STORE}"
    elif demo:
        hint += f"; or run `make demo` in the repository and give --store {DEMO_STORE}"
    raise UsageError(f"{missing_file(path, STORE_FORMAT)}: {hint}")


def _cmd_status(args: argparse.Namespace) -> int:
    _require_state(args.state)
    with RunStateStore(args.state, create=False) as state:
        runs, nodes = state.runs(), state.nodes()
    now = time.time()
    live = _coordinator_running(args.state)
    if args.json:
        print(
            json.dumps(
                {
                    "state_file": str(args.state),
                    "now": now,
                    "runs": [
                        {**asdict(r), "shown_status": _shown_status(r, now, live)} for r in runs
                    ],
                    "nodes": [
                        {
                            **asdict(n),
                            "capabilities": list(n.capabilities),
                            "connection": _connection(n, now),
                            "seconds_since_last_seen": round(now - n.last_seen, 1),
                        }
                        for n in nodes
                    ],
                },
                indent=2,
            )
        )
        return 0
    print(f"State: {args.state} (at {_utc(now)} UTC)")
    print()
    if not runs:
        print("No runs yet.")
    else:
        print(f"Runs ({len(runs)}, newest first):")
        print(
            _table(
                ["RUN", "PLAN", "STATUS", "ANALYSES", "STARTED (UTC)", "LAST CHANGE", "RELEASE"],
                [
                    [
                        r.run_id,
                        r.plan_id,
                        _shown_status(r, now, live),
                        _progress_text(r),
                        _utc(r.created_at),
                        ago(now - r.updated_at),
                        r.release_id or "-",
                    ]
                    for r in runs
                ],
            )
        )
        if any(_shown_status(r, now, live) == "interrupted" for r in runs):
            print(
                "  interrupted: unfinished, and no coordinator is running it (stopped or"
                " killed); running the same plan again resumes it"
            )
    print()
    if not nodes:
        print("No nodes seen yet.")
    else:
        print(f"Nodes ({len(nodes)}):")
        print(
            _table(
                ["NODE", "VERSION", "PROTOCOL", "CONNECTED", "SINCE (UTC)", "LAST CONTACT"],
                [
                    [
                        n.institution_id,
                        n.software_version,
                        f"v{n.protocol_version}",
                        _connection(n, now),
                        _utc(n.connected_at),
                        ago(now - n.last_seen),
                    ]
                    for n in nodes
                ],
            )
        )
        if any(_connection(n, now) == "unknown" for n in nodes):
            print(
                "  unknown: recorded as connected, but not heard from for"
                f" {NODE_STALE_S:.0f} s or more (is the coordinator running?)"
            )
    return 0


def _cmd_releases(args: argparse.Namespace) -> int:
    _require_store(args.store)
    with ReleaseStore(args.store, create=False) as store:
        releases = store.list()
    print(f"Release store: {args.store}")
    if not releases:
        print("No releases yet.")
        return 0
    print(
        _table(
            ["RELEASE", "ID", "CREATED (UTC)", "MODE", "TABLES", "NODES", "TITLE"],
            [
                [
                    r.ref,
                    r.release_id,
                    r.created_at.replace("T", " ")[:19],
                    r.mode,
                    str(r.n_tables),
                    str(r.n_participants),
                    r.title,
                ]
                for r in releases
            ],
        )
    )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    if args.html is not None:
        return _cmd_export_html(args)
    fmt: ExportFormat
    if args.csv is not None:
        fmt, dest = "csv", args.csv
    elif args.json is not None:
        fmt, dest = "json", args.json
    else:
        fmt, dest = "parquet", args.parquet
    _require_store(args.store)
    with ReleaseStore(args.store, create=False) as store:
        stored = store.get(args.release)
        paths = store.export(stored.release_id, fmt, dest)
    print(f"{stored.ref} ({stored.release_id}), {stored.title}: {len(paths)} file(s) written")
    for path in paths:
        print(f"  {path}")
    return 0


def _dashboard_missing(err: ModuleNotFoundError) -> UsageError:
    return UsageError(
        f"the dashboard needs {err.name}, which is not installed here:"
        " pip install 'publiek[dashboard]'"
    )


def _cmd_export_html(args: argparse.Namespace) -> int:
    try:
        from coordinator.dashboard.pages import report
    except ModuleNotFoundError as err:
        raise _dashboard_missing(err) from err
    dest: Path = args.html
    if dest.is_dir():
        raise UsageError(f"{dest} is a folder; --html takes the name of the file to write")
    _require_store(args.store)
    with ReleaseStore(args.store, create=False) as store:
        stored = store.get(args.release)
        page = report(stored)
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_exclusive(dest, page.encode("utf-8"))
    print(f"{stored.ref} ({stored.release_id}), {stored.title}: report written")
    print(f"  {dest}   one file with every chart, table and download; opens without a network")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from coordinator.dashboard.serve import serve
    except ModuleNotFoundError as err:
        raise _dashboard_missing(err) from err
    _require_store(args.store, demo=True)
    return serve(args.store, args.host, args.port)


# What a node refuses unless its institution's policy says otherwise: the defaults of
# node/policy.py (Policy; the table in docs/node-data.md). coordinator/ never imports node/, so
# check-plan states them here; tests/test_check_plan_policy.py compares them with
# node.policy.Policy() so the two cannot drift apart.
DEFAULT_POLICY_MODES = frozenset({ReleaseMode.SECURE})  # allowed_modes
DEFAULT_POLICY_MIN_N_MIN = 2  # min_n_min
DEFAULT_POLICY_MAX_RHO_PER_TASK = Rho.parse("0.5")  # max_rho_per_task
DEFAULT_POLICY_MAX_CELLS = MAX_CELLS  # max_cells (the plan parser refuses more already)
SOCIAL_TARIFF_KEY = "social"  # a price_type key refused unless allow_social_tariff = true


def default_policy_refusals(plan: Plan) -> list[str]:
    """What every node with the default policy would refuse in ``plan``, and why: each as
    "<part of the plan>: <reason>; nodes must allow it in their policy (<setting>)".

    A node checks every task (an analysis, a round of a segmentation or of a reach section)
    against its policy before anything is charged (node/policy.py ``Policy.reasons``); these
    are the same rules at their default limits. They are warnings, not errors: a sector's
    nodes may have changed their policy."""
    out: list[str] = []

    def refuse(what: str, reason: str, setting: str) -> None:
        out.append(f"{what}: {reason}; nodes must allow it in their policy ({setting})")

    # Sections ([[segmentation]], [[reach]]) run in secure mode only, so open mode is the
    # analyses'.
    if plan.analyses and plan.mode not in DEFAULT_POLICY_MODES:
        refuse(
            f"all {len(plan.analyses)} analysis(es)",
            f"release mode {plan.mode.value!r} shows the coordinator each node's own noisy"
            " table, and the default allows secure mode only",
            'allowed_modes = ["secure", "open"]',
        )
    if plan.mode is ReleaseMode.SECURE and plan.min_nodes < DEFAULT_POLICY_MIN_N_MIN:
        refuse(
            "every round of this plan",
            f"min_nodes = {plan.min_nodes} lets a round release a sum of {plan.min_nodes}"
            f" institution(s), and the default takes part only in sums of at least"
            f" {DEFAULT_POLICY_MIN_N_MIN} (n_min)",
            f"min_n_min = {plan.min_nodes}",
        )
    # Every task: (what, its rho, its cells where known before the run).
    tasks: list[tuple[str, Rho, int | None]] = [
        (f"analysis {a.id!r}", a.query.rho, a.query.n_cells) for a in plan.analyses
    ]
    for seg in plan.segmentations:
        if seg.model is None:
            # As the node preview counts it (node/segment_preview.py): the tree may stop after
            # its root (the leaf round then takes every level's share) and Lloyd after one round
            # (the last then takes the rest).
            s = Schedule(seg.rho, seg.k, seg.max_depth, seg.max_lloyd_rounds)
            fit = max(s.leaves_rho_after(1), s.lloyd_rho(seg.max_lloyd_rounds - 1, final=True))
            what = (
                f"segmentation {seg.id!r}, its largest possible fit round (if the tree stops early)"
            )
            tasks.append((what, fit, None))
        tasks += [(f"segmentation {seg.id!r}, table {t.id!r}", t.rho, None) for t in seg.tables]
    for reach in plan.reaches:
        tasks += [
            (f"reach {reach.id!r}, round by {by}", reach.round_rho(by), reach.query(by).n_cells)
            for by in reach.run_order
        ]
    for what, rho, cells in tasks:
        if rho > DEFAULT_POLICY_MAX_RHO_PER_TASK:
            refuse(
                what,
                f"one task costs rho {rho.shown}, and the default allows at most rho"
                f" {DEFAULT_POLICY_MAX_RHO_PER_TASK} per task",
                f'max_rho_per_task = "{rho}"',
            )
        if cells is not None and cells > DEFAULT_POLICY_MAX_CELLS:
            refuse(
                what,
                f"it has {cells} cells, and the default allows at most {DEFAULT_POLICY_MAX_CELLS}",
                f"max_cells = {cells}",
            )
    for a in plan.analyses:
        for d in a.query.dimensions:
            if d.name == "price_type" and SOCIAL_TARIFF_KEY in d.keys:
                others = [k for k in d.keys if k != SOCIAL_TARIFF_KEY]
                # The plan can leave it out instead: the same keys without it, as TOML.
                instead = (
                    f" (a plan leaves it out with keys = {{ price_type = {json.dumps(others)} }})"
                    if others
                    else ""
                )
                refuse(
                    f"analysis {a.id!r}",
                    "its price_type keys include the social tariff, which can reveal poverty"
                    + instead,
                    "allow_social_tariff = true",
                )
    return out


def _cmd_check(args: argparse.Namespace) -> int:
    plan = load_plan(args.plan)
    sections = [f"{len(plan.analyses)} analysis(es)"]
    sections += [f"{len(plan.segmentations)} segmentation(s)"] if plan.segmentations else []
    sections += [f"{len(plan.reaches)} reach section(s)"] if plan.reaches else []
    print(
        f"plan {plan.id!r} is valid: {', '.join(sections)}, mode {plan.mode.value},"
        f" rho {plan.rho_per_node} per node"
        f" ({plan.rho_per_node.to_approx_dp(plan.delta)})"
    )
    for a in plan.analyses:
        q = a.query
        dims = " x ".join(f"{d.name}[{len(d.keys)}]" for d in q.dimensions)
        print(f"  {a.id}: {q.statistic} {q.measure} by {dims} = {q.n_cells} cells, rho {q.rho}")
    for seg in plan.segmentations:
        tables = "; ".join(f"{t.id} rho {t.rho}" for t in seg.tables) or "no tables"
        if seg.model is not None:
            print(
                f"  {seg.id}: S12 with the given model {seg.model.model_id} ({seg.k} segments,"
                f" file {seg.model_file}, sha256 {seg.model_sha256[:12]}), no fit; {tables}"
            )
            continue
        print(
            f"  {seg.id}: S12 segmentation into {seg.k} segments, the fit at most rho {seg.rho}"
            f" ({seg.max_lloyd_rounds} Lloyd rounds at most); {tables}"
        )
    for reach in plan.reaches:
        rounds = "; ".join(f"by {by} rho {reach.round_rho(by).shown}" for by in reach.run_order)
        print(
            f"  {reach.id}: S7-S10 reach of distinct people, {reach.years[0]}-{reach.years[1]},"
            f" rho {reach.total_rho.shown} in {len(reach.by)} round(s): {rounds}"
        )
        if "region" in reach.by:
            table = reach.households
            given = f" from {table.file} (sha256 {table.sha256[:12]})" if table.file else ""
            missing = f"; no count for {', '.join(table.missing)}" if table.missing else ""
            print(f"    S8 households{given}: {table.source}{missing}")
    # Valid, but refused by default: a warning and still exit 0 (the sector's nodes may have
    # changed their policy; each node's `publiek-node preview` gives its own verdict).
    for refusal in default_policy_refusals(plan):
        print(f"warning: every node with the default policy will refuse {refusal}")
    return 0


def _state_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        type=Path,
        default=DEFAULT_STATE,
        metavar="FILE",
        help=f"run state file (default: {DEFAULT_STATE} in the current folder)",
    )


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        type=Path,
        default=DEFAULT_STORE,
        metavar="FILE",
        help=f"release store (default: {DEFAULT_STORE} in the current folder)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="publiek-coordinator",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"publiek-coordinator {software_version()} (protocol v{PROTOCOL_VERSION})",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="serve nodes, run a plan once enough are connected, write the release",
        description="Start the gRPC server, wait for nodes, run every analysis of the plan and"
        " write the release into --out.",
    )
    run.add_argument("plan", type=Path, help="plan file (TOML)")
    run.add_argument("--listen", default="127.0.0.1:50051", help="host:port (port 0: any free)")
    run.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder for release.json and CSVs (the release also goes into --store)",
    )
    run.add_argument(
        "--expect-nodes",
        type=int,
        default=None,
        metavar="N",
        help="start as soon as N nodes are connected (default: the plan's min_nodes)",
    )
    run.add_argument(
        "--wait-s",
        type=float,
        default=300.0,
        metavar="S",
        help="then start anyway after S seconds with whoever is there (default 300)",
    )
    run.add_argument(
        "--coordinator-id",
        default="publiek-coordinator",
        help="name nodes record in their ledgers as the requester",
    )
    run.add_argument("--ca", type=Path, help="sector CA certificate (PEM) that signs node certs")
    run.add_argument("--cert", type=Path, help="this coordinator's certificate (PEM)")
    run.add_argument("--key", type=Path, help="this coordinator's private key (PEM)")
    run.add_argument(
        "--crl",
        type=Path,
        help="the sector CA's revocation list (PEM): revoked nodes are refused; re-read when"
        " the file changes",
    )
    run.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext, no node authentication: local demos only",
    )
    run.add_argument("--port-file", type=Path, help="write the port actually bound to this file")
    _state_option(run)
    _store_option(run)
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument(
        "--log-format",
        default=default_log_format(),
        choices=LOG_FORMATS,
        help="text, or json: one object a line, progress included (default: $PUBLIEK_LOG_FORMAT"
        " or text)",
    )
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-plan", help="validate a plan and show what it asks")
    check.add_argument("plan", type=Path)
    check.add_argument("--log-level", default="warning", choices=["debug", "info", "warning"])
    check.set_defaults(func=_cmd_check)

    status = sub.add_parser(
        "status",
        help="runs (newest first, with progress) and nodes (version, connected, last contact)",
        description="Show what the state file records: every run with its progress and status,"
        " and every node seen with its version, whether it is connected and when it was last"
        " heard from. Safe to run while a coordinator is running.",
    )
    _state_option(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--log-level", default="warning", choices=["debug", "info", "warning"])
    status.set_defaults(func=_cmd_status)

    releases = sub.add_parser(
        "releases",
        help="list the releases in the release store",
        description="List every stored release: plan@version, id, when, mode, tables, nodes.",
    )
    _store_option(releases)
    releases.add_argument("--log-level", default="warning", choices=["debug", "info", "warning"])
    releases.set_defaults(func=_cmd_releases)

    serve = sub.add_parser(
        "serve",
        help="the policymakers' dashboard: releases as charts, tables and downloads",
        description="Serve the release store as a web dashboard: a catalogue of releases; per"
        " release charts with error bars, the tables behind them, CSV/JSON/Parquet downloads,"
        " the privacy cost and provenance in plain language; a methodology page; a JSON API"
        " (/api, /openapi.json). No JavaScript, nothing fetched from elsewhere. Runs until"
        f" Ctrl-C. The demo's store (after `make demo`): --store {DEMO_STORE}.",
    )
    _store_option(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument(
        "--port", type=int, default=8000, help="port to listen on (8000; 0: any free port)"
    )
    serve.add_argument("--log-level", default="warning", choices=["debug", "info", "warning"])
    serve.set_defaults(func=_cmd_serve)

    export = sub.add_parser(
        "export",
        help="write a stored release as CSV, JSON, Parquet or one HTML report",
        description="Write a stored release out: --csv and --parquet write one file per table"
        " into a folder, --json the release document, --html one self-contained report for a"
        " policy note (charts, tables, downloads; opens without a network). Existing files are"
        " never overwritten.",
    )
    export.add_argument(
        "release",
        help="release id (rel-...), plan-id@version, or a plan id for its latest release",
    )
    _store_option(export)
    target = export.add_mutually_exclusive_group(required=True)
    target.add_argument("--csv", type=Path, metavar="DIR", help="one CSV per table into DIR")
    target.add_argument("--json", type=Path, metavar="FILE", help="the release document")
    target.add_argument(
        "--parquet", type=Path, metavar="DIR", help="one Parquet file per table into DIR"
    )
    target.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="one self-contained HTML report (charts, tables, downloads; opens offline)",
    )
    export.add_argument("--log-level", default="warning", choices=["debug", "info", "warning"])
    export.set_defaults(func=_cmd_export)

    add_ca_parser(sub)
    add_health_parser(sub)

    ex = sub.add_parser("example-plan", help="print a commented plan")
    ex.add_argument("--log-level", default="warning", choices=["warning"])
    ex.set_defaults(func=lambda _args: print(EXAMPLE, end="") or 0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(
        "publiek-coordinator", args.log_level, getattr(args, "log_format", None) or "text"
    )
    try:
        return int(args.func(args))
    except (
        PlanError,
        UsageError,
        TlsConfigError,
        CoordinatorFileError,
        ReleaseExists,
        CaError,
        HealthUsageError,
    ) as err:
        print(f"publiek-coordinator: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`status | head`): not an error worth a message. Point stdout
        # at /dev/null so that Python's own flush at exit does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        print(f"publiek-coordinator: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 1
    except Exception as err:  # our bug: one clear line, the detail only when asked for
        if os.environ.get("PUBLIEK_DEBUG"):
            raise
        logging.getLogger("publiek.coordinator").debug("internal error", exc_info=True)
        print(
            f"publiek-coordinator: internal error ({type(err).__name__}: {err}). This is a bug"
            " in publiek-coordinator; please report it. PUBLIEK_DEBUG=1 shows the details.",
            file=sys.stderr,
        )
        return 70


if __name__ == "__main__":
    raise SystemExit(main())
