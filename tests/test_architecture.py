"""The layout's import rules, checked on the source: node and coordinator never import each
other; privacy imports nothing of ours; protocols only privacy; no non-OpenDP randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
OURS = {
    "coordinator",
    "node",
    "protocols",
    "privacy",
    "synthetic",
    "federated",
    "deploy",
    "benchmarks",
    "tests",
}
ALLOWED = {
    "privacy": set(),
    "protocols": {"privacy"},
    "node": {"protocols", "privacy"},
    "coordinator": {"protocols", "privacy"},
    "synthetic": {"protocols"},
}


def imports_of(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(REPO))] = names
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_import_rules(package: str) -> None:
    bad = []
    for file, names in imports_of(package).items():
        for name in names:
            top = name.split(".")[0]
            if top in OURS and top != package and top not in ALLOWED[package]:
                bad.append(f"{file} imports {name}")
    assert bad == []


@pytest.mark.parametrize("package", ["privacy", "protocols", "node", "coordinator"])
def test_no_randomness_but_opendp_and_secrets(package: str) -> None:
    # Noise only from OpenDP (privacy/), anything else random from `secrets`: numpy's and the
    # `random` module's generators are predictable and must not touch released values.
    bad = []
    for file, names in imports_of(package).items():
        bad += [
            f"{file} imports {n}" for n in names if n == "random" or n.startswith("numpy.random")
        ]
        source = (REPO / file).read_text(encoding="utf-8")
        if "np.random" in source or "default_rng" in source:
            bad.append(f"{file} uses numpy randomness")
    assert bad == []


def test_the_checks_above_would_see_a_violation(tmp_path: Path) -> None:
    # Guard against a rule that cannot fail: the same walker finds a planted import.
    tree = ast.parse("from coordinator.runner import RunSettings\nimport numpy.random\n")
    names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {"coordinator.runner", "numpy.random"} <= names
