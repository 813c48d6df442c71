"""The running node's status, in a small JSON file next to its ledger, for health checks.

``publiek-node run`` rewrites it (atomically) when its connection changes and at every
heartbeat; ``publiek-node health`` reads it: healthy means connected and heard from recently.
The file holds no data and no secrets: state, coordinator address, times, counters, last error.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

STATUS_FILE_NAME = "node-status.json"
# A connected node updates the file at least every heartbeat (10 s); three missed is unhealthy.
DEFAULT_MAX_SILENCE_S = 45.0


def status_path(ledger_path: Path) -> Path:
    return ledger_path.parent / STATUS_FILE_NAME


@dataclass(frozen=True, slots=True)
class NodeStatus:
    institution_id: str
    coordinator: str
    state: (
        str  # starting | connecting | connected | disconnected | stopped | incompatible | gave_up
    )
    version: str
    pid: int = field(default_factory=os.getpid)
    since: float = field(default_factory=time.time)  # in this state since
    updated_at: float = field(default_factory=time.time)
    last_contact: float | None = None  # the coordinator last welcomed us or sent a task
    sessions_opened: int = 0
    tasks_answered: int = 0
    last_error: str | None = None


class StatusFile:
    """Keeps the status in memory and on disk; every change is written at once."""

    def __init__(self, path: Path | None, status: NodeStatus) -> None:
        self.path = path
        self.status = status
        self._write()

    def update(self, **changes: Any) -> None:
        now = time.time()
        if "state" in changes and changes["state"] != self.status.state:
            changes.setdefault("since", now)
        self.status = replace(self.status, updated_at=now, **changes)
        self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(asdict(self.status), indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            # Health reporting must never stop the node; the health check then says "stale".
            return


def read_status(path: Path) -> NodeStatus:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return NodeStatus(**raw)
    except FileNotFoundError as err:
        raise ValueError(f"{path} does not exist: is publiek-node run running?") from err
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{path} is not a node status file ({err})") from err


def health(
    status: NodeStatus, now: float | None = None, max_silence_s: float = DEFAULT_MAX_SILENCE_S
) -> tuple[bool, str]:
    """(healthy, one line saying why) for a node's status."""
    moment = time.time() if now is None else now
    quiet = moment - status.updated_at
    contact = (
        f"last contact {moment - status.last_contact:.0f} s ago"
        if status.last_contact is not None
        else "no contact yet"
    )
    head = f"{status.institution_id}: {status.state} (coordinator {status.coordinator}, {contact})"
    if quiet > max_silence_s:
        return False, f"{head}; the status was last written {quiet:.0f} s ago: is the node running?"
    if status.state != "connected":
        why = f"; last error: {status.last_error}" if status.last_error else ""
        return False, head + why
    return True, head
