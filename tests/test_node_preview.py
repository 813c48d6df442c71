"""``publiek-node preview``: what a plan would release, at what cost, and the node's verdict.

Real files throughout: a node folder with its configuration, an export, a ledger that has
already spent some budget, and plan files; the command runs as ``publiek-node`` would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from node.cli import main
from node.ledger import BudgetCap, ChargeRequest, Ledger, Period
from privacy.budget import Rho
from privacy.distributed import DistributedGaussian
from privacy.noise import DiscreteGaussian
from tests.conftest import write_tickets

Run = Callable[..., tuple[int, str, str]]


def scale(value: float) -> str:
    """How the preview writes a noise scale: one decimal, two below 10."""
    return f"{value:,.2f}" if value < 10 else f"{value:,.1f}"


PLAN = """\
[plan]
id = "preview-test"
title = "Two tables"
mode = "{mode}"
min_nodes = {n_min}
delta = 1e-6

[[analysis]]
id = "tickets_by_discipline"
title = "Tickets by discipline"
statistic = "S1"
measure = "tickets"
dimensions = ["discipline"]
years = [2024, 2024]
max_cells = 2
max_per_cell = 4
rho = "{rho}"

[[analysis]]
id = "bookers_by_age"
title = "Bookers by age band"
statistic = "S6"
measure = "bookers"
dimensions = ["age_band"]
years = [2024, 2024]
max_cells = 1
max_per_cell = 1
rho = "0.1"
"""


@pytest.fixture
def node(tmp_path: Path) -> Path:
    """A node folder: node.toml, an export, and a ledger that already spent rho 0.3 this year."""
    rows = []
    # C1: 5 toneel tickets (bounded to 4 a cell), C2: 2 dans, C3: 1 toneel + 1 dans; all 2024.
    for i, (cust, disc) in enumerate(
        [("C1", "toneel")] * 5 + [("C2", "dans")] * 2 + [("C3", "toneel"), ("C3", "dans")]
    ):
        rows.append(
            {
                "ticket_id": f"T{i}",
                "order_id": f"O{cust}",
                "customer_id": cust,
                "order_datetime": "2024-03-01T10:00:00",
                "order_status": "paid",
                "channel": "online_own",
                "performance_id": f"P-{disc}",
                "performance_start": "2024-04-01T20:00:00",
                "venue_id": "V1",
                "discipline": disc,
                "price_type": "full",
                "price_paid_eur": "20.00",
                "postcode": "3511 AA",
                "country": "NL",
                "birth_year": {"C1": "1950", "C2": "1990", "C3": ""}[cust],
            }
        )
    write_tickets(tmp_path / "tickets.csv", rows)
    (tmp_path / "node.toml").write_text(
        'institution_id = "inst-01"\ninstitution_type = "theatre"\n'
        'institution_region = "NL-UT"\n'
        '[data]\ntickets = "tickets.csv"\n'
        '[coordinator]\naddress = "localhost:1"\n[tls]\ninsecure = true\n'
        '[ledger]\npath = "ledger.sqlite"\n'
        '[budget]\nrho_cap = "1.0"\nperiod = "year"\n'
        '[policy]\nfile = "policy.toml"\n'
    )
    (tmp_path / "policy.toml").write_text('allowed_modes = ["secure", "open"]\n')
    ledger = Ledger(tmp_path / "ledger.sqlite", BudgetCap(Rho.parse("1.0"), Period.YEAR))
    ledger.begin(ChargeRequest("old/a", "d", "old", "a", "coord", "x", "secure", Rho.parse("0.3")))
    ledger.close()
    return tmp_path


@pytest.fixture
def run(node: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    def go(
        *args: str, mode: str = "secure", n_min: int = 3, rho: str = "0.2"
    ) -> tuple[int, str, str]:
        plan = node / "plan.toml"
        plan.write_text(PLAN.format(mode=mode, n_min=n_min, rho=rho))
        code = main(["preview", str(plan), "--config", str(node / "node.toml"), *args])
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return go


def test_a_secure_plan_within_policy_and_budget(run: Run, node: Path) -> None:
    code, out, _ = run()
    assert code == 0
    # For every analysis: statistic, measure, dimensions and cells, bound, mode, cost.
    for text in (
        "[1] tickets_by_discipline: Tickets by discipline",
        "statistic  S1",
        "measure    tickets, performances of 2024",
        "table      discipline (15) = 15 cells",
        "at most 4 tickets to a cell, in at most 2 cells (8 tickets in all)",
        "release    secure: only ever seen summed with other institutions",
        "[2] bookers_by_age: Bookers by age band",
        "statistic  S6",
        "at most 1 booker to a cell",
        "policy     accepted",
    ):
        assert text in out, text
    eps = Rho.parse("0.2").to_approx_dp(1e-6).epsilon
    assert f"rho 0.2 (epsilon {eps:.3g} at delta 1e-06)" in out
    # Budget: 0.3 of 1.0 spent, the plan costs 0.3, 0.4 left afterwards.
    assert "rho 0.7 is left of your cap (rho 1 per year" in out
    assert "The plan costs rho 0.3" in out and "Left after this plan: rho 0.4." in out
    assert "accept all 2 analyses" in out
    assert "your values" not in out  # the data is not even read without --show-values


def test_secure_noise_is_the_share_for_n_min_and_the_assumed_participants(
    run: Run, node: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def share(l2: float, l1: float, cells: int, rho: str, n_min: int, n_max: int) -> float:
        return DistributedGaussian.for_budget(
            l2, l1, cells, Rho.parse(rho), n_min, n_max
        ).share_scale

    _, out, _ = run()
    tickets = share(4 * math.sqrt(2), 8.0, 15, "0.2", 3, 3)
    assert f"share of scale {scale(tickets)} tickets to each cell" in out
    assert f"a sum of 3 carries scale {scale(math.sqrt(3) * tickets)} tickets" in out
    assert "noise shares computed for 3 participating institutions" in out
    # A small share (one booker, a generous rho) must cover every count of survivors from n_min
    # up to the participants, so the number of participants assumed matters.
    (node / "policy.toml").write_text('max_rho_per_task = "1"\n')
    plan = node / "bookers.toml"
    plan.write_text(
        PLAN.split("[[analysis]]")[0].format(mode="secure", n_min=10, rho="-")
        + "[[analysis]]"
        + PLAN.split("[[analysis]]")[2].replace('rho = "0.1"', 'rho = "0.6"')
    )
    shown = {}
    for n in (10, 100):
        assert main(["preview", str(plan), "--config", str(node / "node.toml"),
                     "--participants", str(n)]) == 0  # fmt: skip
        shown[n] = capsys.readouterr().out
    small, large = share(1, 1, 6, "0.6", 10, 10), share(1, 1, 6, "0.6", 10, 100)
    assert large > small * 1.03
    assert f"share of scale {scale(small)} bookers" in shown[10]
    assert f"share of scale {scale(large)} bookers" in shown[100]


def test_an_open_plan_shows_the_full_noise_and_what_the_coordinator_sees(run: Run) -> None:
    code, out, _ = run(mode="open")
    assert code == 0
    full = DiscreteGaussian.for_budget(4 * math.sqrt(2), Rho.parse("0.2")).scale
    assert f"a discrete Gaussian of scale {scale(full)} tickets to each cell" in out
    assert "open: the coordinator sees your own noisy table" in out


def test_show_values_prints_the_nodes_own_bounded_table(run: Run) -> None:
    code, out, _ = run("--show-values")
    assert code == 0
    assert "this table never leaves this node" in out
    lines = [line.split() for line in out.splitlines()]
    # toneel: C1's 5 tickets bounded to 4, plus C3's 1; dans: 2 + 1.
    assert ["toneel", "5"] in lines and ["dans", "3"] in lines
    assert "total 8 tickets; 13 of 15 cells are 0" in out
    # Bookers by age in 2024: C1 born 1950 (74), C2 1990 (34), C3 unknown.
    assert ["65+", "1"] in lines and ["18-34", "1"] in lines and ["unknown", "1"] in lines


def test_refusals_give_every_reason_and_exit_1(run: Run, node: Path) -> None:
    (node / "policy.toml").write_text('max_rho_per_task = "0.15"\nmin_n_min = 5\n')
    code, out, _ = run(mode="open")
    assert code == 1
    assert "policy     REFUSED:" in out
    for reason in (
        "release mode 'open' is not allowed here (allowed: secure)",
        "a single task may cost at most rho 0.15, this one costs rho 0.2",
    ):
        assert f"- {reason}" in out
    assert "2 of 2 analyses would be refused by this node: tickets_by_discipline," in out
    code, out, _ = run(n_min=4)
    assert code == 1
    assert "as few as 4 institution(s), this node takes part only in sums of at least 5" in out


def test_a_plan_over_the_remaining_budget_is_refused_where_it_runs_out(
    run: Run, node: Path
) -> None:
    (node / "policy.toml").write_text('max_rho_per_task = "1"\n')
    code, out, _ = run(rho="0.65")  # 0.65 + 0.1 > the 0.7 left
    assert code == 1
    first, second = out.split("[2] ")
    assert "policy     accepted" in first
    assert "the budget would run out: rho 0.05 would be left" in second
    assert "What this node would answer costs rho 0.65" in out


def test_the_run_cap_counts_the_plans_earlier_analyses(run: Run, node: Path) -> None:
    (node / "policy.toml").write_text('max_rho_per_run = "0.25"\n')
    code, out, _ = run()
    assert code == 1
    assert "one run may cost at most rho 0.25, with this task it would cost rho 0.3" in out


def test_preview_spends_nothing_and_creates_no_ledger(run: Run, node: Path) -> None:
    before = (node / "ledger.sqlite").read_bytes()
    run("--show-values")
    ledger = Ledger(node / "ledger.sqlite", BudgetCap(Rho.parse("1.0"), Period.YEAR))
    assert [e.task_id for e in ledger.entries()] == ["old/a"] and ledger.refusals() == []
    ledger.close()
    assert len(before) > 0
    for f in node.glob("ledger.sqlite*"):
        f.unlink()
    code, out, _ = run()
    assert code == 0 and "rho 1 is left of your cap" in out
    assert not (node / "ledger.sqlite").exists()


@pytest.mark.parametrize(
    ("plan", "args", "expected"),
    [
        ('[plan]\nid = "Bad Id"\nmode = "loud"\n', [], ["plan.id must be", "plan.mode must be"]),
        ("not toml [", [], ["not valid TOML"]),
        (None, [], ["file not found"]),
        (PLAN.format(mode="secure", n_min=5, rho="0.1"), ["--participants", "4"], ["below"]),
    ],
)
def test_bad_input_is_explained_with_exit_2(
    node: Path, capsys: pytest.CaptureFixture[str], plan: Any, args: list[str], expected: list[str]
) -> None:
    path = node / "given.toml"
    if plan is not None:
        path.write_text(plan)
    code = main(["preview", str(path), "--config", str(node / "node.toml"), *args])
    out, err = capsys.readouterr()
    assert code == 2
    for text in expected:
        assert text in err
    assert "Traceback" not in out + err


def test_bad_participants_and_config_are_refused_plainly(
    node: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["preview", "p.toml", "--config", str(node / "node.toml"), "--participants", "0"])
    assert exc.value.code == 2
    assert "at least 1" in capsys.readouterr().err
    (node / "policy.toml").write_text("allowed_modes = 3\n")
    (node / "plan.toml").write_text(PLAN.format(mode="secure", n_min=3, rho="0.1"))
    code = main(["preview", str(node / "plan.toml"), "--config", str(node / "node.toml")])
    assert code == 2
    assert "allowed_modes must be a list" in capsys.readouterr().err


REACH_PLAN = """\
[plan]
id = "reach-preview"
title = "Reach"
mode = "secure"
min_nodes = 3
delta = 1e-6

[[reach]]
id = "reach_2024"
title = "Sector reach"
years = [2024, 2024]
rho = "0.06"
by = ["sector", "discipline"]
buckets = { sector = 1024 }
"""


def test_a_reach_section_shows_its_rounds_what_they_send_and_the_cost(
    node: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from protocols.plan import parse_plan
    from protocols.secagg import SecAggSetup, noise_share

    plan = node / "reach.toml"
    plan.write_text(REACH_PLAN)
    argv = ["preview", str(plan), "--config", str(node / "node.toml")]
    # Without the sector's match-key file this node would sit the section out: it says so.
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "[1] reach_2024: Sector reach (S7-S10" in out
    assert "no [matching] key_file" in out and "REFUSED" in out
    (node / "match.key").write_text("ab" * 32)
    (node / "match.key").chmod(0o600)
    with (node / "node.toml").open("a") as fh:
        fh.write('[matching]\nkey_file = "match.key"\n')
    assert main(argv) == 0
    out = capsys.readouterr().out
    # The budget split (sector 3 : discipline 1), each round's cost and its bound.
    assert "rounds     2 secure rounds" in out and "(discipline, sector)" in out
    assert "rho 0.015;" in out and "rho 0.045;" in out
    assert "cost       rho 0.06 (epsilon" in out
    assert "1,024 buckets of a hash of their match key in 2 independent copies" in out
    assert "at most 8 each" in out and "at most 37 cell(s)" in out
    assert "gives S7 people reached in the sector, S10" in out
    assert "gives S7 people by discipline, S9" in out
    assert "policy     accepted" in out and "accept all 1 analyses" in out
    # The noise is the round's own: a sum of n_min shares at the scale the round computes.
    [reach] = parse_plan(REACH_PLAN).reaches
    q = reach.query("sector", "x")
    ids = ("node-000", "node-001", "node-002")
    sd = noise_share(SecAggSetup(q, ids, n_min=3, degree=2, threshold=1)).total_scale(3)
    assert f"a sum of 3 carries noise of sd {sd:.3g} per cell" in out
    # Previewing spends nothing.
    ledger = Ledger(node / "ledger.sqlite", BudgetCap(Rho.parse("1.0"), Period.YEAR))
    assert ledger.spent() == Rho.parse("0.3")
    ledger.close()
