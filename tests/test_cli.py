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
