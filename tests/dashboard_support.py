"""Shared by the dashboard tests: a release store as a coordinator leaves it, and the real
`publiek-coordinator serve` on a free loopback port.

The releases are built by the real ``build_release`` (post-processing, intervals, suppression)
from the plans in ``deploy/plans`` (every S1-S6 table shape of ``sector-2024.toml``). Their
noisy sums are plausible true counts (a fixed pattern per key, with empty cells) plus discrete
Gaussian noise drawn by OpenDP at the scale each table's bound and rho require.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from coordinator.aggregate import AggregatedTable
from coordinator.release import build_release
from coordinator.store import ReleaseStore, StoredRelease
from coordinator.transport import NodeInfo
from privacy.intervals import sum_half_width
from privacy.noise import DiscreteGaussian
from protocols.plan import Plan, load_plan, parse_plan

REPO = Path(__file__).resolve().parent.parent
SECTOR_PLAN = REPO / "deploy" / "plans" / "sector-2024.toml"
DEMO_PLAN = REPO / "deploy" / "plans" / "s1-demo.toml"
N_NODES = 12

# A typical size of each measure's cells, so that charts and intervals look like the sector's.
_SCALE = {
    "tickets": 60_000,
    "visits": 30_000,
    "orders": 25_000,
    "bookers": 20_000,
    "revenue_cents": 150_000_000,
}
_EMPTY_KEYS = {"ABROAD", "BE-WAL", "overig", "other_discount", "unknown"}


def _weight(dimension: str, key: str) -> float:
    """A fixed share in (0.05, 1] per key, 0 for keys that stand for empty cells."""
    if key in _EMPTY_KEYS:
        return 0.0
    digest = hashlib.sha256(f"{dimension}={key}".encode()).digest()
    return 0.05 + 0.95 * digest[0] / 255


def truth(plan: Plan, analysis_id: str) -> list[int]:
    analysis = next(a for a in plan.analyses if a.id == analysis_id)
    q = analysis.query
    base = _SCALE.get(q.measure, 10_000)
    cells = []
    for keys in itertools.product(*(d.keys for d in q.dimensions)):
        w = math.prod(_weight(d.name, k) for d, k in zip(q.dimensions, keys, strict=True))
        cells.append(round(base * w))
    return cells


def release_of(plan: Plan, n: int, *, participants: list[str] | None = None) -> dict[str, Any]:
    """A release of ``plan`` as a coordinator would build it (run ``n``; noise by OpenDP)."""
    ids = participants or [f"inst-{i:02d}" for i in range(1, N_NODES + 1)]
    tables = []
    for analysis in plan.analyses:
        q = analysis.query
        noise = DiscreteGaussian.for_budget(q.bound.l2_sensitivity, q.rho)
        sums = noise.sample(np.asarray(truth(plan, analysis.id), dtype=np.int64))
        tables.append(
            AggregatedTable(
                analysis=analysis,
                contributors=tuple(ids),
                excluded=(),
                sums=tuple(int(v) for v in sums),
                per_node_scale=noise.scale / math.sqrt(len(ids)),
                sd_total=noise.scale,
                half_width_95=sum_half_width([noise.scale**2], 0.95),
                secure_round={"n_min": plan.min_nodes, "survivors": len(ids)},
            )
        )
    doc = build_release(
        plan=plan,
        run_id=f"{plan.id}-run-{n}",
        coordinator_id="test-coordinator",
        participants=[NodeInfo(i, "0.1.0", 1, ("histogram",), f"s-{i}", 1.7e9) for i in ids],
        tables=tables,
        failed=[],
        created_at=datetime(2026, 11, 1, 12, 0, tzinfo=UTC) + timedelta(hours=n),
    )
    return doc


def sector_plan() -> Plan:
    return load_plan(SECTOR_PLAN)


def fill_store(path: Path) -> list[StoredRelease]:
    """The demo's S1 release, then two versions of the sector's S1-S6 release."""
    with ReleaseStore(path) as store:
        return [
            store.put(release_of(load_plan(DEMO_PLAN), 1)),
            store.put(release_of(sector_plan(), 2)),
            store.put(release_of(sector_plan(), 3)),
        ]


def hostile_plan() -> Plan:
    """A plan whose title is markup: the dashboard must show it as text."""
    text = DEMO_PLAN.read_text(encoding="utf-8")
    text = re.sub(
        r'(?m)^title = ".*"$',
        'title = "<script>alert(1)</script> & <b>bold</b>"',
        text,
        count=1,
    )
    text = text.replace('id = "demo-s1-2024"', 'id = "hostile"')
    return parse_plan(text)


@dataclass
class Served:
    url: str
    process: subprocess.Popen[str]
    store: Path


def serve(store: Path, *extra: str, cwd: Path | None = None) -> Served:
    """``publiek-coordinator serve`` as a user runs it, on a free port of 127.0.0.1."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coordinator",
            "serve",
            "--store",
            str(store),
            "--port",
            "0",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd or REPO,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        if found:
            return Served(found.group(0), proc, store)
    proc.kill()
    _, err = proc.communicate(timeout=10)
    raise AssertionError(f"serve did not start: {''.join(lines)}{err}")


def stop(served: Served) -> tuple[int, str]:
    """Stop the server as Ctrl-C or a service manager would; its exit code and stderr."""
    served.process.terminate()
    try:
        _, err = served.process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        served.process.kill()
        _, err = served.process.communicate(timeout=10)
    return served.process.returncode, err


@dataclass(frozen=True)
class Fetched:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def fetch(url: str) -> Fetched:
    """A GET as any HTTP client does it (redirects followed), errors returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return Fetched(
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as err:
        with err:
            return Fetched(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


def pages_of(served: Served, releases: list[StoredRelease]) -> Iterator[tuple[str, Fetched]]:
    """Every page a person can reach: catalogue, methodology, API, each release."""
    for path in ("", "methodology", "api", *(f"releases/{r.release_id}" for r in releases)):
        yield path, fetch(served.url + path)
