"""The operator's commands: `status`, `releases`, `export`, and `run` keeping its state and
releases, run as a person would (real processes, real files, nodes over gRPC); exit codes
and messages, never a traceback."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from coordinator.cli import DEFAULT_STATE, DEFAULT_STORE, ago, build_parser
from coordinator.cli import main as coordinator_main
from coordinator.state import NodeSnapshot, RunStateStore
from coordinator.store import ReleaseStore
from tests.conftest import ticket_row, write_tickets
from tests.federation import write_node_config
from tests.test_state import begin
from tests.test_store import make_release
from tests.test_store import plan as store_plan

REPO = Path(__file__).resolve().parent.parent
OPEN_PLAN = REPO / "deploy" / "plans" / "s1-open.toml"


def cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "coordinator", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The command in this process (cheaper than a process; an uncaught exception fails the
    test just as a traceback would)."""
    code = coordinator_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- status ----------------------------------------------------------------------------------


def test_status_without_a_state_file_says_so(tmp_path: Path) -> None:
    result = cli("status", cwd=tmp_path)
    assert result.returncode == 2
    # What is missing, in English, and the option that names another file.
    assert result.stderr.startswith(
        f"publiek-coordinator: {DEFAULT_STATE} does not exist (no publiek coordinator run-state"
        " file there): give --state FILE"
    )
    assert not (tmp_path / DEFAULT_STATE).exists()  # looking does not create one


def test_status_of_an_empty_state_file(tmp_path: Path) -> None:
    RunStateStore(tmp_path / DEFAULT_STATE).close()
    result = cli("status", cwd=tmp_path)
    assert result.returncode == 0
    assert "No runs yet." in result.stdout and "No nodes seen yet." in result.stdout
    as_json = cli("status", "--json", cwd=tmp_path)
    assert as_json.returncode == 0
    parsed = json.loads(as_json.stdout)
    assert (parsed["runs"], parsed["nodes"]) == ([], [])


@pytest.fixture
def coordinator_holding(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """Take a state file's lock as a running coordinator does (the OS drops it on exit)."""
    held: list[Any] = []

    def hold(state: Path) -> None:
        fh = state.with_name(state.name + ".lock").open("a+")
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.append(fh)

    yield hold
    for fh in held:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


@pytest.fixture
def populated(tmp_path: Path) -> Path:
    path = tmp_path / "state.sqlite"
    now = time.time()
    with RunStateStore(path) as s:
        begin(s, "run-a-released")
        s.save_analysis("run-a-released", "a0", {"v": 1})
        s.finish_run("run-a-released", "released", "rel-00000000000000aa")
        begin(s, "run-b-aborted")
        s.finish_run("run-b-aborted", "aborted", None)
        begin(s, "run-c-killed")
        s.heartbeat("run-c-killed", alive=False)
        begin(s, "run-d-live")
        s.save_analysis("run-d-live", "a0", {"v": 1})
        s.fail_analysis("run-d-live", "a1", "too few nodes", ["inst-01"])
        s.record_nodes(
            [
                NodeSnapshot("inst-01", "0.1.0", 1, ("histogram/1",), True, now - 600, now - 12),
                NodeSnapshot("inst-02", "0.0.9", 1, (), False, now - 900, now - 300),
                NodeSnapshot("inst-03", "0.1.0", 1, (), True, now - 7200, now - 4000),
            ]
        )
    return path


def test_status_shows_runs_newest_first_and_nodes(
    populated: Path,
    capsys: pytest.CaptureFixture[str],
    coordinator_holding: Callable[[Path], None],
) -> None:
    coordinator_holding(populated)  # a coordinator is running run-d-live right now
    assert coordinator_main(["status", "--state", str(populated)]) == 0
    out = capsys.readouterr().out
    runs = [line.split() for line in out.splitlines() if line.strip().startswith("run-")]
    assert [r[0] for r in runs] == ["run-d-live", "run-c-killed", "run-b-aborted", "run-a-released"]
    assert [r[2] for r in runs] == ["running", "interrupted", "aborted", "released"]
    assert "1/3 done, 1 failed" in out
    assert "0/3 done" in out
    assert "rel-00000000000000aa" in out
    assert "interrupted: unfinished, and no coordinator is running it" in out
    nodes = {line.split()[0]: line for line in out.splitlines() if "inst-0" in line}
    assert nodes["inst-01"].split()[1:4] == ["0.1.0", "v1", "yes"]
    # Seen 12 s before the fixture's clock; a slow machine may take a second to get here.
    assert nodes["inst-01"].endswith(("12 s ago", "13 s ago"))
    assert nodes["inst-02"].split()[1:4] == ["0.0.9", "v1", "no"]
    assert nodes["inst-02"].endswith("5 min ago")
    assert nodes["inst-03"].split()[3] == "unknown"
    assert nodes["inst-03"].endswith("67 min ago")
    assert "unknown: recorded as connected, but not heard from" in out


def test_status_json(
    populated: Path, tmp_path: Path, coordinator_holding: Callable[[Path], None]
) -> None:
    coordinator_holding(populated)
    result = cli("status", "--state", str(populated), "--json", cwd=tmp_path)
    assert result.returncode == 0
    parsed = json.loads(result.stdout)
    runs = {r["run_id"]: r for r in parsed["runs"]}
    assert parsed["runs"][0]["run_id"] == "run-d-live"
    assert runs["run-d-live"]["shown_status"] == "running"
    assert (runs["run-d-live"]["done"], runs["run-d-live"]["failed"]) == (1, 1)
    assert runs["run-d-live"]["total"] == 3
    assert (runs["run-c-killed"]["status"], runs["run-c-killed"]["shown_status"]) == (
        "running",
        "interrupted",
    )
    assert runs["run-a-released"]["release_id"] == "rel-00000000000000aa"
    nodes = {n["institution_id"]: n for n in parsed["nodes"]}
    assert nodes["inst-01"]["connection"] == "yes"
    assert nodes["inst-01"]["capabilities"] == ["histogram/1"]
    assert 12 <= nodes["inst-01"]["seconds_since_last_seen"] < 30
    assert nodes["inst-03"]["connection"] == "unknown"
    assert nodes["inst-02"]["connected"] is False


def test_ago_reads_like_a_person() -> None:
    assert [ago(s) for s in (-3, 0, 12.4, 89, 95, 3000, 7200, 200_000)] == [
        "0 s ago",
        "0 s ago",
        "12 s ago",
        "89 s ago",
        "2 min ago",
        "50 min ago",
        "2 h ago",
        "2 days ago",
    ]


# -- releases and export ---------------------------------------------------------------------


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "coordinator"
    folder.mkdir()
    with ReleaseStore(folder / DEFAULT_STORE) as s:
        s.put(make_release(store_plan("plan-a"), 1))
        s.put(make_release(store_plan("plan-b"), 2))
        s.put(make_release(store_plan("plan-a"), 3))
    return folder


def test_releases_lists_the_store(
    store_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = cli("releases", cwd=store_dir)
    assert result.returncode == 0
    rows = [line.split()[0] for line in result.stdout.splitlines() if "@" in line]
    assert rows == ["plan-a@1", "plan-b@1", "plan-a@2"]
    assert "Store test: plan-a" in result.stdout

    empty = tmp_path / "empty.sqlite"
    ReleaseStore(empty).close()
    code, out, _ = main(capsys, "releases", "--store", str(empty))
    assert code == 0 and "No releases yet." in out

    code, _, err = main(capsys, "releases", "--store", str(tmp_path / DEFAULT_STORE))
    assert code == 2
    assert f"{tmp_path / DEFAULT_STORE} does not exist (no publiek release store there):" in err
    assert "give --store FILE" in err


def test_a_missing_store_is_named_with_its_option_and_the_demo_store_suggested(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    commands = [
        ("releases",),
        ("export", "plan-a", "--csv", "tables"),
        ("export", "plan-a", "--html", "report.html"),
        ("serve", "--port", "0"),
    ]
    for args in commands:
        code, _, err = main(capsys, *args)
        assert code == 2, args
        assert err.startswith(
            f"publiek-coordinator: {DEFAULT_STORE} does not exist (no publiek release store"
            " there): give --store FILE"
        ), err
        assert "the demo's store is here" not in err
        # Only the dashboard says how to make a store to look at.
        assert ("run `make demo`" in err) == (args[0] == "serve"), err
    # After `make demo`, from the repository: the error points at the demo's store.
    demo = tmp_path / "demo-output"
    demo.mkdir()
    with ReleaseStore(demo / "releases.sqlite") as store:
        store.put(make_release(store_plan("plan-a"), 1))
    for args in commands:
        code, _, err = main(capsys, *args)
        assert code == 2, args
        assert err.rstrip().endswith(
            "the demo's store is here: --store demo-output/releases.sqlite"
        ), err
    assert not (tmp_path / "tables").exists() and not (tmp_path / "report.html").exists()
    assert not (tmp_path / DEFAULT_STORE).exists()  # looking does not create one
    # The store given explicitly is the demo's: no suggestion, it is used.
    code, out, _ = main(capsys, "releases", "--store", "demo-output/releases.sqlite")
    assert code == 0 and "plan-a@1" in out


def test_run_releases_export_and_serve_share_one_default_store(
    store_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder `run` leaves its store in is the folder every other command finds it in."""
    parser = build_parser()
    defaults = {
        " ".join(args): parser.parse_args(args).store
        for args in (
            ["run", "plan.toml", "--out", "out"],
            ["releases"],
            ["export", "plan-a", "--csv", "x"],
            ["serve"],
        )
    }
    assert set(defaults.values()) == {DEFAULT_STORE}, defaults
    monkeypatch.chdir(store_dir)
    code, out, _ = main(capsys, "releases")
    assert code == 0 and "plan-a@2" in out
    code, out, _ = main(capsys, "export", "plan-b", "--json", "b.json")
    assert code == 0 and "plan-b@1" in out
    # serve, as an operator starts it in that folder: the catalogue lists the store's releases.
    proc = subprocess.Popen(
        [sys.executable, "-m", "coordinator", "serve", "--port", "0"],
        cwd=store_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            found = re.search(r"http://127\.0\.0\.1:\d+/", line)
            url = found.group(0) if found else None
        assert url is not None, proc.stderr.read() if proc.stderr else ""
        with urllib.request.urlopen(url, timeout=30) as response:
            page = response.read().decode("utf-8")
        assert "plan-a@2" in page and "plan-b@1" in page
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_export_each_format_and_refuse_to_overwrite(
    store_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = make_release(store_plan("plan-a"), 3)
    # One export as a process, as an operator runs it ...
    result = cli("export", "plan-a", "--csv", "csv", cwd=store_dir)
    assert result.returncode == 0, result.stderr
    assert "plan-a@2" in result.stdout and doc["release_id"] in result.stdout
    again = cli("export", "plan-a", "--csv", "csv", cwd=store_dir)
    assert again.returncode == 2
    assert "never overwrite" in again.stderr
    # ... the others in this process.
    monkeypatch.chdir(store_dir)
    for flag, dest in (("--json", "r.json"), ("--parquet", "pq")):
        code, out, _ = main(capsys, "export", "plan-a", flag, dest)
        assert code == 0 and "plan-a@2" in out
        code, _, err = main(capsys, "export", "plan-a", flag, dest)
        assert code == 2 and "never overwrite" in err
    assert json.loads((store_dir / "r.json").read_text()) == doc
    table = doc["tables"][0]
    frame = pl.read_parquet(store_dir / "pq" / f"{table['analysis_id']}.parquet")
    assert frame["noisy_sum"].to_list() == [c["noisy_sum"] for c in table["cells"]]
    csv_text = (store_dir / "csv" / f"{table['analysis_id']}.csv").read_text()
    assert csv_text.splitlines()[1].split(",")[-2] == str(table["cells"][0]["noisy_sum"])

    code, _, _ = main(capsys, "export", "plan-a@1", "--json", "v1.json")
    assert code == 0
    assert json.loads((store_dir / "v1.json").read_text())["run_id"] == "plan-a-run-1"


def test_export_refusals(
    store_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(store_dir)
    code, _, err = main(capsys, "export", "no-such-plan", "--csv", "x")
    assert code == 2
    assert "no release 'no-such-plan'" in err
    assert not (store_dir / "x").exists()
    with pytest.raises(SystemExit) as exit_:
        main(capsys, "export", "plan-a")
    assert exit_.value.code == 2
    required = "one of the arguments --csv --json --parquet --html is required"
    assert required in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(capsys, "export", "plan-a", "--csv", "a", "--json", "b.json")
    assert exit_.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_bad_files_are_named_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database " * 100)
    result = cli("status", "--state", str(text), cwd=tmp_path)
    assert result.returncode == 2
    assert f"{text} is not a publiek coordinator run-state file" in result.stderr
    for args in (
        ("status", "--json", "--state", str(text)),
        ("releases", "--store", str(text)),
        ("export", "x", "--store", str(text), "--json", str(tmp_path / "out.json")),
    ):
        code, _, err = main(capsys, *args)
        assert code == 2
        assert f"{text} is not a publiek" in err
        assert "it is not an SQLite database" in err
    state = tmp_path / "state.sqlite"
    RunStateStore(state).close()
    code, _, err = main(capsys, "releases", "--store", str(state))
    assert code == 2
    assert "it is a publiek coordinator run-state file" in err


def test_run_refuses_a_bad_state_file_before_listening(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database " * 100)
    port_file = tmp_path / "port"
    for option in ("--state", "--store"):
        result = cli(
            "run", str(OPEN_PLAN), "--insecure", "--listen", "127.0.0.1:0",
            "--port-file", str(port_file), "--out", str(tmp_path / "out"), option, str(text),
            cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 2
        assert f"{text} is not a publiek" in result.stderr
        assert not port_file.exists()
    help_text = cli("run", "--help", cwd=tmp_path).stdout
    assert "--state" in help_text and "--store" in help_text


def test_a_run_stored_but_not_marked_released_is_finished_not_run_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The coordinator stored the release and was killed before it marked the run released.
    p = store_plan("plan-a")
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text(p.source_text, encoding="utf-8")
    doc = make_release(p, 1)
    with RunStateStore(tmp_path / "state.sqlite") as s, ReleaseStore(tmp_path / "r.sqlite") as r:
        begin(s, doc["run_id"], p)
        r.put(doc)
    code, out, _ = main(
        capsys, "run", str(plan_file), "--insecure", "--out", str(tmp_path / "out"),
        "--state", str(tmp_path / "state.sqlite"), "--store", str(tmp_path / "r.sqlite"),
    )  # fmt: skip
    assert code == 0
    assert f"run {doc['run_id']} was released already as plan-a@1" in out
    with RunStateStore(tmp_path / "state.sqlite") as s, ReleaseStore(tmp_path / "r.sqlite") as r:
        [run] = s.runs()
        assert (run.status, run.release_id) == ("released", doc["release_id"])
        assert [x.ref for x in r.list()] == ["plan-a@1"]  # no second release of that run
        assert (tmp_path / "out" / "release.json").read_text() == r.get("plan-a").text


# -- help ------------------------------------------------------------------------------------


def test_health_help_is_plain_text(tmp_path: Path) -> None:
    result = cli("health", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "Ask a running coordinator whether it serves" in result.stdout
    assert "(grpc.health.v1.Health/Check)" in result.stdout
    assert "``" not in result.stdout


def test_no_help_shows_markup(capsys: pytest.CaptureFixture[str]) -> None:
    """Every command's and CA action's --help as a terminal shows it: no reStructuredText."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = [[name] for name in sub.choices]
    actions = ("init", "sign", "revoke", "crl", "server-cert", "list")
    commands += [["ca", action, "--help"] for action in actions]
    assert ["health"] in commands and ["ca"] in commands
    for command in commands:
        args = command if command[-1] == "--help" else [*command, "--help"]
        with pytest.raises(SystemExit) as exit_:
            coordinator_main(args)
        assert exit_.value.code == 0
        shown = capsys.readouterr().out
        assert shown.startswith("usage: publiek-coordinator"), args
        assert "``" not in shown, args


# -- run, end to end -------------------------------------------------------------------------


class Federation:
    """A coordinator process (`publiek-coordinator run` in ``folder``, default state and store
    files) and node processes that dial in to it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.nodes: list[subprocess.Popen[bytes]] = []
        self.coordinator: subprocess.Popen[str] | None = None
        self.tickets = {}
        for n in range(1, 4):
            rows = [
                ticket_row(
                    ticket_id=f"T{i}",
                    customer_id=f"C{i % 20}",
                    performance_start="2024-05-01T20:00:00",
                )
                for i in range(60 + 10 * n)
            ]
            self.tickets[f"inst-0{n}"] = write_tickets(folder / "data" / f"inst-0{n}.csv", rows)

    def start_coordinator(self, out: str) -> int:
        port_file = self.folder / "port"
        port_file.unlink(missing_ok=True)
        self.coordinator = subprocess.Popen(
            [sys.executable, "-m", "coordinator", "run", str(OPEN_PLAN), "--insecure",
             "--listen", "127.0.0.1:0", "--port-file", str(port_file), "--out", out,
             "--expect-nodes", "3", "--wait-s", "60"],
            cwd=self.folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert self.coordinator.poll() is None, self.coordinator.communicate()
            assert time.monotonic() < deadline, "the coordinator did not start"
            time.sleep(0.05)
        return int(port_file.read_text())

    def start_nodes(self, port: int) -> None:
        for nid, tickets in self.tickets.items():
            config = write_node_config(
                self.folder / "nodes" / nid, nid, "theatre", tickets, port, None
            )
            log = (config.parent / "node.log").open("ab")
            self.nodes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "node", "run", "--config", str(config)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        assert self.coordinator is not None
        out, err = self.coordinator.communicate(timeout=timeout)
        assert "Traceback" not in out + err, err
        return self.coordinator.returncode, out, err

    def stop_nodes(self) -> None:
        for p in self.nodes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.nodes:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.nodes = []

    def close(self) -> None:
        self.stop_nodes()
        if self.coordinator is not None and self.coordinator.poll() is None:
            self.coordinator.kill()
            self.coordinator.communicate()


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    fed = Federation(tmp_path)
    try:
        yield fed
    finally:
        fed.close()


def test_run_keeps_state_and_store_and_resumes_an_interrupted_run(federation: Federation) -> None:
    folder = federation.folder

    # 1. A run that completes: the release is in --out and in the store, the same bytes.
    port = federation.start_coordinator("out1")
    status = json.loads(cli("status", "--json", cwd=folder).stdout)
    [run] = status["runs"]
    assert (run["status"], run["shown_status"], run["done"], run["total"]) == (
        "running",
        "running",
        0,
        1,
    )
    federation.start_nodes(port)
    code, out, err = federation.finish()
    assert code == 0, out + err
    federation.stop_nodes()
    assert "stored as demo-s1-2024-open@1 in publiek-releases.sqlite" in out
    with ReleaseStore(folder / DEFAULT_STORE, create=False) as store:
        stored = store.get("demo-s1-2024-open")
    assert stored.version == 1
    assert stored.text == (folder / "out1" / "release.json").read_text(encoding="utf-8")
    with RunStateStore(folder / DEFAULT_STATE, create=False) as state:
        [rec] = state.runs()
        nodes = state.nodes()
    assert (rec.status, rec.release_id, rec.done, rec.total) == (
        "released",
        stored.release_id,
        1,
        1,
    )
    assert rec.run_id == stored.run_id
    assert [n.institution_id for n in nodes] == ["inst-01", "inst-02", "inst-03"]
    assert not any(n.connected for n in nodes)  # the coordinator stopped: nobody is connected
    assert all(time.time() - n.last_seen < 120 for n in nodes)
    shown = cli("status", cwd=folder).stdout
    assert "released" in shown and "1/1 done" in shown and stored.release_id in shown

    # 2. A run stopped before any node came: unfinished, shown as interrupted.
    federation.start_coordinator("out2")
    assert federation.coordinator is not None
    federation.coordinator.send_signal(signal.SIGTERM)
    code, out, _ = federation.finish()
    assert code == 1
    assert "stays unfinished" in out
    status = json.loads(cli("status", "--json", cwd=folder).stdout)
    interrupted = status["runs"][0]
    assert (interrupted["status"], interrupted["shown_status"]) == ("running", "interrupted")

    # 3. Started again, the coordinator resumes that run and releases it as version 2.
    port = federation.start_coordinator("out2")
    federation.start_nodes(port)
    code, out, err = federation.finish()
    assert code == 0, out + err
    assert f"resuming run {interrupted['run_id']}" in out
    with ReleaseStore(folder / DEFAULT_STORE, create=False) as store:
        listed = store.list()
    assert [(r.ref, r.run_id) for r in listed] == [
        ("demo-s1-2024-open@1", rec.run_id),
        ("demo-s1-2024-open@2", interrupted["run_id"]),
    ]
    listing = cli("releases", cwd=folder)
    assert "demo-s1-2024-open@2" in listing.stdout


def test_a_run_without_a_coordinator_is_interrupted_and_a_second_coordinator_is_refused(
    populated: Path, tmp_path: Path, coordinator_holding: Callable[[Path], None]
) -> None:
    # Nobody holds the lock: even a run whose heartbeat is fresh was interrupted (killed).
    parsed = json.loads(cli("status", "--state", str(populated), "--json", cwd=tmp_path).stdout)
    assert {r["run_id"]: r["shown_status"] for r in parsed["runs"]}["run-d-live"] == "interrupted"
    # With the lock held, a second coordinator on the same state refuses to start.
    coordinator_holding(populated)
    plan = Path(__file__).resolve().parent.parent / "deploy" / "plans" / "s1-open.toml"
    result = cli(
        "run", str(plan), "--insecure", "--listen", "127.0.0.1:0", "--out", str(tmp_path / "o"),
        "--state", str(populated), "--store", str(tmp_path / "r.sqlite"),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "another publiek-coordinator is running with the state file" in result.stderr
    assert "Traceback" not in result.stderr
