"""Fault matrix, row "a corrupt release store": damaged pages or a cut-off file are one clear
error naming the file, for the library, for every command that reads the store, and for `run`,
which refuses before it listens (so no node is asked anything, and nothing is charged)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.store import ReleaseStore, StoreError
from tests.test_store import make_release, plan

REPO = Path(__file__).resolve().parent.parent
OPEN_PLAN = REPO / "deploy" / "plans" / "s1-open.toml"


def damaged_store(tmp_path: Path, damage: str) -> Path:
    good = tmp_path / "releases.sqlite"
    with ReleaseStore(good) as s:
        for v in range(1, 30):
            s.put(make_release(plan(f"plan-{v}"), v))
    data = bytearray(good.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        at = len(data) * int(damage.split()[-1].rstrip("%")) // 100 // 4096 * 4096
        data[at : at + 4096] = b"\xff" * 4096
    bad = tmp_path / "damaged.sqlite"
    bad.write_bytes(bytes(data))
    return bad


def read_everything(path: Path) -> None:
    with ReleaseStore(path, create=False) as s:
        for entry in s.list():
            s.get(entry.release_id)


@pytest.mark.parametrize("damage", ["truncated", "page at 10%", "page at 50%", "page at 90%"])
def test_a_damaged_store_is_one_clear_error_everywhere(tmp_path: Path, damage: str) -> None:
    bad = damaged_store(tmp_path, damage)
    before = bad.read_bytes()
    with pytest.raises(StoreError, match=rf"{bad}.*damaged"):
        read_everything(bad)
    port_file = tmp_path / "port"
    for command in (
        ["releases", "--store", str(bad)],
        ["export", "plan-3", "--store", str(bad), "--json", str(tmp_path / "out.json")],
        ["run", str(OPEN_PLAN), "--insecure", "--listen", "127.0.0.1:0", "--port-file",
         str(port_file), "--out", str(tmp_path / "out"), "--store", str(bad), "--state",
         str(tmp_path / "state.sqlite")],
    ):  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-m", "coordinator", *command],
            capture_output=True, text=True, cwd=tmp_path, check=False, timeout=120,
        )  # fmt: skip
        assert result.returncode == 2, (command[0], result.stderr)
        assert str(bad) in result.stderr and "damaged" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert not port_file.exists()  # run never listened: no node was asked anything
    assert not (tmp_path / "out.json").exists()
    assert bad.read_bytes() == before  # nothing tried to "repair" it in place
