"""`make demo` end to end, small: the real console scripts, processes, mTLS and a release."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_demo_runs_and_leaves_a_release(tmp_path: Path) -> None:
    out = tmp_path / "demo-output"
    # The demo's own plan, with n_min lowered to fit a three-institution sector.
    plan = tmp_path / "plan.toml"
    demo_plan = (REPO / "deploy" / "plans" / "s1-demo.toml").read_text()
    plan.write_text(demo_plan.replace("min_nodes = 10", "min_nodes = 3"))
    result = subprocess.run(
        [sys.executable, "-m", "deploy.demo", "--institutions", "3", "--scale", "0.03",
         "--out", str(out), "--plan", str(plan)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    release = json.loads((out / "release.json").read_text())
    assert [p["institution_id"] for p in release["participants"]] == [
        "inst-01",
        "inst-02",
        "inst-03",
    ]
    assert release["plan"]["mode"] == "secure"
    assert release["tables"][0]["secure_aggregation"]["n_min"] == 3
    assert (out / "s1_tickets_discipline_quarter.csv").read_text().startswith("discipline,quarter,")
    # The summary tells a person what happened and where to look.
    for text in (
        "secure round, unmasking: 3/3 answered in",
        "Tickets in 2024 by discipline",
        "release.json",
        "publiek-node ledger",
    ):
        assert text in result.stdout
    # Each node's ledger, read with the real CLI, shows the one release it made.
    config = out / "nodes" / "inst-01" / "node.toml"
    ledger = subprocess.run(
        [sys.executable, "-m", "node", "ledger", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ledger.returncode == 0
    assert "remaining: rho 0.8" in ledger.stdout  # two tables at rho 0.1 of a cap of 1
    assert "answered" in ledger.stdout and "publiek-demo-coordinator" in ledger.stdout

    # It ends with the policymakers' report and the one command that serves the dashboard,
    # and has returned (it never waits for a browser).
    *_, report_line, _, serve_line = result.stdout.rstrip().splitlines()
    report = REPO / report_line.split()[0]  # as printed: relative to where it ran, or absolute
    assert report == out / "report.html"
    page = report.read_text(encoding="utf-8")
    assert release["release_id"] in page and "<svg" in page and "<script" not in page
    command = shlex.split(serve_line)
    assert command[1:] == ["serve", "--store", str(out / "releases.sqlite")]
    served = subprocess.Popen(
        [*command, "--port", "0"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert served.stdout is not None
        url = re.search(
            r"http://127\.0\.0\.1:\d+/", served.stdout.readline() + served.stdout.readline()
        )
        assert url is not None
        with urllib.request.urlopen(url.group(0), timeout=30) as response:
            catalogue = response.read().decode("utf-8")
        assert f"/releases/{release['release_id']}" in catalogue
    finally:
        served.terminate()
        _, err = served.communicate(timeout=20)
    assert served.returncode == 0, err


def test_demo_with_a_plan_of_other_statistics_applies_a_given_model(tmp_path: Path) -> None:
    # A plan with no tickets table and no quarter (the summary used to assume both) that
    # applies a segment model made elsewhere: next year's S12 with last year's centres.
    import numpy as np

    from protocols.dimensions import SEGMENT_KEYS
    from protocols.features import customer_space
    from protocols.segment_model import Segment, SegmentModel

    space = customer_space()
    rng = np.random.default_rng(5)
    segments = tuple(
        Segment(
            key, f"group {i + 1}", "made elsewhere", tuple(map(float, rng.uniform(0, 1, space.dim)))
        )
        for i, key in enumerate(SEGMENT_KEYS[:3])
    )
    SegmentModel("seg-elsewhere-demo", "Made elsewhere", space, segments).write(
        tmp_path / "model.json"
    )
    plan = tmp_path / "plan.toml"
    plan.write_text(
        '[plan]\nid = "s12-applied"\nmode = "secure"\nmin_nodes = 3\n\n'
        '[[segmentation]]\nid = "s12_applied"\nmodel = "model.json"\n\n'
        '[[segmentation.table]]\nby = "region"\nrho = "0.05"\n'
    )
    out = tmp_path / "demo-output"
    result = subprocess.run(
        [sys.executable, "-m", "deploy.demo", "--institutions", "3", "--scale", "0.03",
         "--out", str(out), "--plan", str(plan)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "a model made before (model.json), no fit; this run's shares" in result.stdout
    release = json.loads((out / "release.json").read_text())
    assert [t["analysis_id"] for t in release["tables"]] == ["s12_applied_by_region"]
    [model] = release["segmentations"]
    assert model["model_id"] == "seg-elsewhere-demo"
    assert (out / "segment-model-seg-elsewhere-demo.json").is_file()
