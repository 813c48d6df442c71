"""The command lines a newcomer meets first: help texts, examples, and clear refusals."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from coordinator.cli import main as coordinator_main
from node.cli import main as node_main
from node.config import EXAMPLE as NODE_EXAMPLE
from node.config import ConfigError, parse_config
from protocols.plan import parse_plan


def run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        (
            "node",
            [
                "publiek-node example-config",
                "ledger",
                "budget",
                "exit codes",
                "publiek-node init",
                "publiek-node check",
                "publiek-node report",
            ],
        ),
        ("coordinator", ["check-plan", "--expect-nodes", "exit codes", "never receives personal"]),
    ],
)
def test_help_is_there_for_a_newcomer(module: str, expected: list[str]) -> None:
    result = run(module, "--help")
    assert result.returncode == 0
    for text in expected:
        assert text in result.stdout


def test_run_help_names_every_option() -> None:
    out = run("coordinator", "run", "--help").stdout
    for opt in ("--listen", "--out", "--ca", "--cert", "--key", "--insecure", "--wait-s"):
        assert opt in out


def test_example_config_is_valid(tmp_path: Path) -> None:
    config = parse_config(tomllib.loads(NODE_EXAMPLE), tmp_path)
    assert config.institution_type == "theatre"
    assert config.tls is not None


def test_config_problems_are_reported_together(tmp_path: Path) -> None:
    raw = {
        "institution_type": "circus",
        "tls": {"insecure": True, "ca": "ca.pem"},
        "budget": {"rho_cap": "lots", "period": "decade"},
    }
    with pytest.raises(ConfigError) as err:
        parse_config(raw, tmp_path)
    text = " | ".join(err.value.problems)
    for expected in (
        "institution_id is missing",
        "circus",
        "conflicts",
        "rho_cap",
        "budget.period",
        "data.tickets",
        "coordinator.address",
    ):
        assert expected in text


def test_example_plan_printed_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert coordinator_main(["example-plan"]) == 0
    assert parse_plan(capsys.readouterr().out).analyses


def test_check_plan_lists_every_section_and_its_cost(capsys: pytest.CaptureFixture[str]) -> None:
    sector = Path(__file__).resolve().parent.parent / "deploy" / "plans" / "sector-2024.toml"
    assert coordinator_main(["check-plan", str(sector)]) == 0
    out = capsys.readouterr().out
    plan = parse_plan(sector.read_text())
    head = out.splitlines()[0]
    assert "17 analysis(es), 1 segmentation(s), 1 reach section(s)" in head
    assert f"rho {plan.rho_per_node} per node" in head
    reach = plan.reaches[0]
    line = next(x for x in out.splitlines() if x.startswith(f"  {reach.id}:"))
    assert f"rho {reach.total_rho.shown} in {len(reach.by)} round(s)" in line
    assert all(f"by {by} rho {reach.round_rho(by).shown}" in line for by in reach.by)
    assert "/" not in line.split(":", 1)[1]  # no exact fractions shown to people


def test_check_plan_reports_a_bad_plan(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[plan]\nid = "x"\nmode = "open"\n[[analysis]]\nid = "a"\n')
    result = run("coordinator", "check-plan", str(bad))
    assert result.returncode == 2
    assert "statistic must be" in result.stderr and "measure must be" in result.stderr
    assert "Traceback" not in result.stderr


def test_conflicting_tls_options_are_refused(tmp_path: Path) -> None:
    plan = Path(__file__).resolve().parent.parent / "deploy" / "plans" / "s1-demo.toml"
    result = run(
        "coordinator", "run", str(plan), "--out", str(tmp_path), "--insecure", "--ca", "ca.pem"
    )
    assert result.returncode == 2
    assert "--insecure conflicts with --ca" in result.stderr
    missing = run("coordinator", "run", str(plan), "--out", str(tmp_path))
    assert missing.returncode == 2 and "mutual TLS needs --ca, --cert and --key" in missing.stderr


def test_node_with_missing_config_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert node_main(["run", "--config", str(tmp_path / "none.toml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_node_run_without_its_tls_files_says_where_they_come_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Straight after `init`: no certs yet. Not "not a readable PEM certificate"."""
    config = tmp_path / "node.toml"
    config.write_text(
        'institution_id = "x"\ninstitution_type = "theatre"\n[data]\ntickets = "t.csv"\n'
        '[coordinator]\naddress = "127.0.0.1:1"\n'
        '[tls]\nca = "certs/ca.pem"\ncert = "certs/node.pem"\nkey = "certs/node.key"\n'
        '[ledger]\npath = "ledger.sqlite"\n'
    )
    assert node_main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "readable PEM" not in err
    lines = err.splitlines()
    assert lines[0] == f"publiek-node: {config}: 3 problems"
    assert lines[1] == (
        f"  - tls.ca: {tmp_path / 'certs' / 'ca.pem'} does not exist: get ca.pem, the sector CA"
        " certificate, from the sector body; it sends it back with your signed certificate"
        " (docs/runbook.md §2, Enrol a node)"
    )
    assert "`publiek-node init --institution-id ID`" in lines[2] and "tls.cert" in lines[2]
    assert "`publiek-node init --institution-id ID`" in lines[3] and "tls.key" in lines[3]
    # The section named is the one that tells how ca.pem arrives.
    runbook = (Path(__file__).resolve().parent.parent / "docs" / "runbook.md").read_text()
    section = runbook.split("## 2. Enrol a node", 1)[1].split("\n## ", 1)[0]
    assert "sends\nback the certificate with `ca.pem`" in section
    # With the CA there, only the node's own files are missing (nothing else is checked yet).
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("")
    assert node_main(["run", "--config", str(config)]) == 2
    assert "2 problems" in capsys.readouterr().err.splitlines()[0]
