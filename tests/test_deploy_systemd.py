"""The systemd units and the sample configurations in deploy/.

``systemd-analyze verify`` (Debian's systemd) checks each unit in a throw-away root that holds
the system's own unit files, the units and the programs they start; then our rules: the
hardening every publiek service keeps, ExecStart accepted by our own argparse parsers (with
%i and the environment file filled in), restart rules that match the programs' exit codes.
The sample configurations load with the real loaders.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from node.agent import ExitCode
from node.config import load_config
from tests.cli_commands import parse_problem

ROOT = Path(__file__).resolve().parents[1]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
ENV_FILE = ROOT / "deploy" / "config" / "coordinator.env"
SYSTEM_UNITS = next(
    (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()), None
)
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "RestrictSUIDSGID": "yes",
    "UMask": "0077",
    "StateDirectory": "publiek",
    "User": "publiek",
}


def parse_unit(text: str) -> dict[str, dict[str, str]]:
    """Sections -> key -> value (continuation lines joined; no key is repeated in ours)."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in text.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, line
        key, _, value = line.partition("=")
        assert key not in current, f"{key} twice"
        current[key.strip()] = " ".join(value.split())
    return sections


def env_file(path: Path) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in path.read_text().splitlines()]
    return {k.strip(): v.strip() for k, v in (p for p in pairs if len(p) == 2 and p[0][:1] != "#")}


def exec_start(unit: dict[str, dict[str, str]], env: dict[str, str], instance: str) -> list[str]:
    command = unit["Service"]["ExecStart"].replace("%i", instance)
    command = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], command)
    return shlex.split(command)


def unit_problems(path: Path, text: str) -> list[str]:
    unit = parse_unit(text)
    service = unit.get("Service", {})
    problems = [
        f"{key}={service.get(key)!r}, expected {want!r}"
        for key, want in HARDENING.items()
        if service.get(key) != want
    ]
    env = env_file(ENV_FILE) if "EnvironmentFile" in service else {}
    missing = set(re.findall(r"\$\{(\w+)\}", service.get("ExecStart", ""))) - set(env)
    if missing:
        problems.append(f"ExecStart uses {sorted(missing)}, not set in {ENV_FILE.name}")
    else:
        argv = exec_start(unit, env, "2024-s1")
        if not argv[0].startswith("/opt/publiek/bin/"):
            problems.append(f"ExecStart runs {argv[0]}, not the /opt/publiek install")
        if problem := parse_problem(argv):
            problems.append(f"ExecStart: {problem}")
        if "--log-format" not in argv or argv[argv.index("--log-format") + 1] != "json":
            problems.append("ExecStart: logs are not JSON")
    if unit.get("Install", {}).get("WantedBy") != "multi-user.target":
        problems.append("not wanted by multi-user.target")
    return problems


def _verify(units: list[Path], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEM_UNITS is not None
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    target = root / "etc/systemd/system"
    target.mkdir(parents=True)
    for unit in units:
        shutil.copy(unit, target / unit.name)
    bin_dir = root / "opt/publiek/bin"
    bin_dir.mkdir(parents=True)
    for program in ("publiek-node", "publiek-coordinator"):  # the installed entry points
        shutil.copy(Path(sys.executable).parent / program, bin_dir / program)
    names = [u.name.replace("@.service", "@2024-s1.service") for u in units]
    for name, unit in zip(names, units, strict=True):
        if name != unit.name:
            shutil.copy(unit, target / name)
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}",
         *[str(target / n) for n in names]],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or SYSTEM_UNITS is None,
    reason="systemd-analyze missing (Debian package 'systemd'; `make test` installs it as root)",
)


@needs_systemd
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    assert [u.name for u in UNITS] == ["publiek-coordinator@.service", "publiek-node.service"]
    done = _verify(UNITS, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


@needs_systemd
def test_systemd_analyze_refuses_a_broken_unit(tmp_path: Path) -> None:
    broken = tmp_path / "publiek-broken.service"
    broken.write_text(
        (ROOT / "deploy/systemd/publiek-node.service")
        .read_text()
        .replace("ProtectSystem=strict", "ProtectSystem=very")
        .replace("/opt/publiek/bin/publiek-node", "/opt/publiek/bin/publiek-nod")
    )
    done = _verify([broken], tmp_path)
    assert done.returncode != 0
    assert "ProtectSystem" in done.stderr or "protect system" in done.stderr
    assert "publiek-nod " in done.stderr or "publiek-nod is not executable" in done.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_follows_our_rules(unit: Path) -> None:
    assert unit_problems(unit, unit.read_text()) == []


def test_the_unit_checks_catch_a_careless_unit() -> None:
    text = (ROOT / "deploy/systemd/publiek-coordinator@.service").read_text()
    careless = (
        text.replace("User=publiek", "User=root")
        .replace("ProtectSystem=strict", "ProtectSystem=full")
        .replace("--expect-nodes ${PUBLIEK_EXPECT_NODES}", "--expect ${PUBLIEK_NODES}")
    )
    problems = "\n".join(unit_problems(Path("x.service"), careless))
    assert "User='root'" in problems and "ProtectSystem='full'" in problems
    assert "['PUBLIEK_NODES'], not set in coordinator.env" in problems
    # With the variable set, the option itself is wrong (abbreviations are not accepted).
    fixed_env = careless.replace("${PUBLIEK_NODES}", "3")
    problems = "\n".join(unit_problems(Path("x.service"), fixed_env))
    assert "ExecStart: publiek-coordinator: error: unrecognized arguments: --expect 3" in (problems)


def test_the_node_unit_restarts_only_what_a_restart_can_fix() -> None:
    service = parse_unit((ROOT / "deploy/systemd/publiek-node.service").read_text())["Service"]
    # 2: configuration or data (node/cli.py), 3: incompatible coordinator (node/agent.py).
    assert service["RestartPreventExitStatus"].split() == ["2", str(int(ExitCode.INCOMPATIBLE))]
    assert service["Restart"] == "on-failure"
    # The export is read-only even to the node; its state folder is the only place it writes.
    assert service["ReadOnlyPaths"] == "-/srv/publiek/data"
    config = load_config(ROOT / "deploy/config/node.toml")
    assert config.tickets is not None and config.tickets.is_relative_to("/srv/publiek/data")
    assert config.ledger_path.parent == Path("/var/lib/publiek")  # StateDirectory=publiek
    assert config.tls is not None and config.tls.crl is not None
    argv = exec_start(parse_unit(Path(UNITS[1]).read_text()), {}, "")
    assert argv[argv.index("--config") + 1] == "/etc/publiek/node.toml"


def test_the_coordinator_env_file_sets_exactly_what_the_unit_uses() -> None:
    env = env_file(ENV_FILE)
    unit = (ROOT / "deploy/systemd/publiek-coordinator@.service").read_text()
    used = set(re.findall(r"\$\{(\w+)\}", unit))
    assert used <= set(env)
    assert set(env) - used == {"PUBLIEK_LOG_FORMAT"}  # read by the program itself
    assert env["PUBLIEK_LOG_FORMAT"] == "json"
    assert int(env["PUBLIEK_EXPECT_NODES"]) > 0 and float(env["PUBLIEK_WAIT_S"]) > 0


def test_the_units_documentation_is_installed_by_the_runbooks_install_step(
    tmp_path: Path,
) -> None:
    # The runbook's own install line, run with /opt/publiek moved under tmp_path: the file each
    # unit names in Documentation= must be what it puts there.
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    [line] = [x for x in runbook.splitlines() if x.startswith("install ") and "share/doc" in x]
    prefix = str(tmp_path / "opt" / "publiek")
    command = line.split("#")[0].replace("/opt/publiek", prefix)
    subprocess.run(["sh", "-c", command], cwd=ROOT, check=True)
    for unit in UNITS:
        [doc] = re.findall(r"^Documentation=file://(\S+)$", unit.read_text(), re.MULTILINE)
        assert doc.startswith("/opt/publiek/"), (unit.name, doc)
        installed = Path(doc.replace("/opt/publiek", prefix))
        assert installed.is_file(), (unit.name, doc)
        assert installed.read_text() == (ROOT / "docs" / installed.name).read_text()
