"""The `publiek-synth` command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from synthetic import load_sector
from synthetic.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--institutions", "3", "--seed", "5", "--scale", "0.02", "--years", "2024"]


def test_generate_writes_a_sector_and_summarises_it(tmp_path: Path, capsys):
    out = tmp_path / "sector"
    assert main(["generate", *SMALL, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 institutions" in printed
    assert "tickets in" in printed
    assert "people" in printed
    institutions = json.loads((out / "institutions.json").read_text(encoding="utf-8"))
    assert [i["institution_id"] for i in institutions] == ["inst-01", "inst-02", "inst-03"]
    for inst in institutions:
        assert (out / inst["institution_id"] / "ticket_line.csv").stat().st_size > 0
    sector = load_sector(out)
    assert sector.config.years == (2024, 2024)
    assert sector.config.seed == 5


def test_generate_refuses_to_overwrite_without_force(tmp_path: Path, capsys):
    out = tmp_path / "sector"
    assert main(["generate", *SMALL, "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["generate", *SMALL, "--out", str(out), "--quiet"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["generate", *SMALL, "--out", str(out), "--quiet", "--force"]) == 0


def test_generate_refuses_a_non_empty_foreign_directory(tmp_path: Path, capsys):
    (tmp_path / "precious.txt").write_text("do not delete", encoding="utf-8")
    assert main(["generate", *SMALL, "--out", str(tmp_path), "--force"]) == 2
    assert "holds no generated sector" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "--institutions", "0", "--seed", "1", "--out", "x"], "at least 1"),
        (["generate", "--institutions", "two", "--seed", "1", "--out", "x"], "whole number"),
        (["generate", "--institutions", "2", "--seed", "-3", "--out", "x"], "negative"),
        (["generate", "--institutions", "2", "--seed", "1"], "--out"),
        (["generate", *SMALL[:4], "--out", "x", "--years", "2024-2020"], "before"),
        (["generate", *SMALL[:4], "--out", "x", "--years", "soon"], "2023-2024"),
        (["generate", *SMALL[:4], "--out", "x", "--scale", "0"], "above 0"),
        (["generate", *SMALL[:4], "--out", "x", "--scale", "50"], "scale"),
        (["fly"], "invalid choice"),
        ([], "COMMAND"),
    ],
)
def test_bad_arguments_give_a_clear_error(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert "Traceback" not in captured.err + captured.out


def test_help_is_clear(capsys):
    assert main(["generate", "--help"]) == 0
    text = capsys.readouterr().out
    for needle in ("--institutions", "--seed", "--out", "--years", "--scale", "ticket_line.csv"):
        assert needle in text


def test_report_prints_statistics_and_rejects_a_missing_sector(tmp_path: Path, capsys):
    out = tmp_path / "sector"
    assert main(["generate", *SMALL, "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    report = capsys.readouterr().out
    assert "frequency per institution-year: 1" in report
    assert "year-on-year retention" in report
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "sector.json" in capsys.readouterr().err


def test_python_dash_m_synthetic_runs(tmp_path: Path):
    out = tmp_path / "sector"
    result = subprocess.run(
        [sys.executable, "-m", "synthetic", "generate", *SMALL, "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "institutions" in result.stdout
    assert (out / "sector.json").is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "synthetic", "generate", "--institutions", "x"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
