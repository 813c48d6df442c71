"""Flower stays out of the node's and the coordinator's start-up: only the Flower runtime's own
modules import flwr, and the command lines run without loading it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLOWER_MODULES = {
    "node/flower.py",
    "node/round_state.py",
    "coordinator/flower.py",
    "deploy/flower_inprocess.py",
    "deploy/flower_sim.py",
    "benchmarks/flower_baseline.py",
}


def _imports_flwr(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "flwr" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "flwr":
            return True
    return False


def test_only_the_flower_runtime_imports_flwr() -> None:
    found = {
        str(p.relative_to(REPO))
        for package in ("node", "coordinator", "protocols", "privacy", "deploy", "benchmarks")
        for p in (REPO / package).rglob("*.py")
        if _imports_flwr(p)
    }
    assert found <= FLOWER_MODULES
    assert "node/flower.py" in found and "coordinator/flower.py" in found  # the walker works


def test_the_command_lines_start_without_flower() -> None:
    code = (
        "import sys, node.cli, coordinator.cli, node.service, coordinator.runner;"
        " print(sorted(m for m in sys.modules if m.split('.')[0] in ('flwr', 'ray')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert out.strip() == "[]"
