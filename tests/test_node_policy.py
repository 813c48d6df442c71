"""The local policy: every field refuses with a plain reason, all reasons at once; its two file
forms; and the handler asking it (with the run's spending and the round's n_min) before any
charge, on real ledgers."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from deploy.devcerts import make_dev_pki
from node.config import EXAMPLE, ConfigError, load_config, parse_config
from node.data import load_ticket_lines
from node.handler import NodeIdentity, TaskHandler
from node.ledger import BudgetCap, ChargeRequest, Ledger, Period
from node.policy import Policy, PolicyError, parse_policy
from privacy.bounding import ContributionBound
from privacy.budget import Rho
from protocols.dimensions import public_keys
from protocols.errors import ErrorCode, PublicError
from protocols.identity import PeerVerifier, Signer
from protocols.messages import (
    Dimension,
    ErrorInfo,
    HistogramAnswer,
    HistogramQuery,
    ReleaseMode,
    Task,
)
from protocols.secagg import SecAggRequest, SecAggSetup
from tests.conftest import ticket_row


def query(
    measure: str = "tickets",
    dims: tuple[str, ...] = ("discipline",),
    *,
    mode: ReleaseMode = ReleaseMode.SECURE,
    rho: str = "0.1",
    max_cells: int = 4,
    max_per_cell: int = 8,
    statistic: str = "S1",
    keys: dict[str, tuple[str, ...]] | None = None,
) -> HistogramQuery:
    return HistogramQuery(
        statistic=statistic,
        measure=measure,
        dimensions=tuple(
            Dimension(d, (keys or {}).get(d) or public_keys(d, 2024, 2024)) for d in dims
        ),
        bound=ContributionBound(max_cells, max_per_cell),
        rho=Rho.parse(rho),
        mode=mode,
        years=(2024, 2024),
    )


def refused(policy: Policy, q: HistogramQuery, **kw: Any) -> str:
    with pytest.raises(PublicError) as err:
        policy.check(q, **kw)
    assert err.value.code is ErrorCode.POLICY_REFUSED
    return err.value.message


# --- each field --------------------------------------------------------------------------------


def test_the_default_policy_accepts_a_modest_secure_table_and_nothing_open() -> None:
    Policy().check(query(), n_min=3, spent_in_run=Rho.zero())
    assert "release mode 'open' is not allowed here (allowed: secure)" in refused(
        Policy(), query(mode=ReleaseMode.OPEN)
    )


@pytest.mark.parametrize(
    ("fields", "q", "kw", "reason"),
    [
        ({"allowed_statistics": ["S1"]}, query(statistic="S2"), {}, "statistic S2 is not among"),
        ({"allowed_measures": ["tickets"]}, query("bookers"), {}, "measure 'bookers' is not"),
        ({"max_rho_per_task": "0.05"}, query(), {}, "at most rho 0.05, this one costs rho 0.1"),
        (
            {"max_rho_per_run": "0.25"},
            query(),
            {"spent_in_run": Rho.parse("0.2")},
            "one run may cost at most rho 0.25, with this task it would cost rho 0.3",
        ),
        ({"min_n_min": 5}, query(), {"n_min": 4}, "as few as 4 institution(s)"),
        ({"max_cells": 10}, query(), {}, "the table has 15 cells, more than 10"),
        (
            {"max_contribution": 16},
            query(max_cells=4, max_per_cell=8),
            {},
            "up to 32 to this table (8 in each of 4 cells), more than the 16",
        ),
        (
            {"max_contribution": {"revenue_cents": 100_000}},
            query("revenue_cents", max_cells=4, max_per_cell=50_000),
            {},
            "up to 200000 cents",
        ),
        ({}, query(dims=("price_type",)), {}, "breaks out the social tariff"),
        ({"allowed_modes": []}, query(), {}, "(allowed: none)"),
    ],
)
def test_each_field_refuses_with_its_reason(
    fields: dict[str, Any], q: HistogramQuery, kw: dict[str, Any], reason: str
) -> None:
    policy = parse_policy(fields)
    assert reason in refused(policy, q, **kw)


def test_what_each_field_lets_through() -> None:
    # Bookers count once per cell, so their contribution is max_cells, whatever max_per_cell.
    parse_policy({"max_contribution": {"bookers": 4}}).check(query("bookers", max_per_cell=50))
    # Other measures have no cap when the table names only one.
    parse_policy({"max_contribution": {"bookers": 4}}).check(query("tickets", max_per_cell=50))
    # The run cap counts what the run already spent; a fresh run is fine.
    parse_policy({"max_rho_per_run": "0.25"}).check(query(), spent_in_run=Rho.parse("0.15"))
    # n_min applies to secure rounds only.
    open_ok = parse_policy({"allowed_modes": ["open"], "min_n_min": 5})
    open_ok.check(query(mode=ReleaseMode.OPEN), n_min=1)
    # Price types without the social tariff, or with it after opting in.
    no_social = tuple(k for k in public_keys("price_type", 2024, 2024) if k != "social")
    Policy().check(query(dims=("price_type",), keys={"price_type": no_social}))
    parse_policy({"allow_social_tariff": True}).check(query(dims=("price_type",)))


def test_every_reason_is_given_at_once() -> None:
    policy = parse_policy(
        {"allowed_statistics": ["S1"], "max_rho_per_task": "0.01", "max_cells": 2}
    )
    message = refused(policy, query(statistic="S5", dims=("price_type",), mode=ReleaseMode.OPEN))
    for reason in ("release mode", "statistic S5", "at most rho 0.01", "more than 2", "social"):
        assert reason in message
    assert message.count(";") == 4


def test_policy_problems_are_all_reported() -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(
            {
                "allowed_modes": ["secure", "loud"],
                "allowed_measures": ["tickets", "seats"],
                "allowed_statistics": ["S1", "sector"],
                "max_rho_per_task": "lots",
                "max_rho_per_run": True,
                "min_n_min": 0,
                "max_cells": 10**9,
                "max_contribution": {"tickets": 0, "seats": 3},
                "allow_social_tariff": "yes",
                "allowed_mode": ["open"],
            }
        )
    text = "\n".join(err.value.problems)
    assert len(err.value.problems) == 11, text
    for part in (
        "policy: unknown field(s) allowed_mode",
        "'loud' not known",
        "'seats' not known",
        "statistics such as 'S1'",
        "policy.max_rho_per_task: rho 'lots'",
        'policy.max_rho_per_run must be a number such as "0.5"',
        "policy.min_n_min must be a whole number from 1",
        "policy.max_cells must be a whole number from 1 to 100000",
        "policy.max_contribution.tickets must be a whole number of at least 1",
        "policy.max_contribution: unknown measure 'seats'",
        "policy.allow_social_tariff must be true or false",
    ):
        assert part in text


# --- in node.toml, inline or in a file of its own ------------------------------------------------


def node_toml(folder: Path, top: str = "", policy: str = "", budget: str = "") -> Path:
    text = (
        f'{top}institution_id = "inst-01"\ninstitution_type = "theatre"\n'
        '[data]\ntickets = "t.csv"\n[coordinator]\naddress = "localhost:1"\n'
        '[tls]\ninsecure = true\n[ledger]\npath = "l.sqlite"\n'
        + (f"[budget]\n{budget}" if budget else "")
        + (f"[policy]\n{policy}" if policy else "")
    )
    path = folder / "node.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_configuration_holds_a_valid_policy(tmp_path: Path) -> None:
    config = parse_config(tomllib.loads(EXAMPLE), tmp_path)
    assert config.policy == Policy()
    assert config.institution_region == "NL-NH"


def test_policy_inline(tmp_path: Path) -> None:
    config = load_config(
        node_toml(tmp_path, policy='max_rho_per_run = "0.6"\nallowed_measures = ["tickets"]\n')
    )
    assert config.policy.max_rho_per_run == Rho.parse("0.6")
    assert config.policy.allowed_measures == frozenset({"tickets"})


def test_policy_in_a_file_of_its_own(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text(
        '# agreed with our data protection officer\nallowed_modes = ["secure", "open"]\n'
        'max_rho_per_task = "0.2"\nmin_n_min = 5\nallow_social_tariff = true\n'
        "max_contribution = { tickets = 256 }\n"
    )
    config = load_config(node_toml(tmp_path, policy='file = "policy.toml"\n'))
    assert config.policy == Policy(
        max_rho_per_task=Rho.parse("0.2"),
        allowed_modes=frozenset(ReleaseMode),
        min_n_min=5,
        allow_social_tariff=True,
        max_contribution={"tickets": 256},
    )
    # The same under a [policy] heading in the file.
    (tmp_path / "policy.toml").write_text("[policy]\nmin_n_min = 7\n")
    assert load_config(tmp_path / "node.toml").policy.min_n_min == 7


def test_policy_file_problems_are_reported_with_every_other_problem(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text('min_n_min = "two"\nmax_cells = -1\nwhatever = 1\n')
    path = node_toml(
        tmp_path, top='institution_region = "NL-XX"\n', policy='file = "policy.toml"\n'
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = "\n".join(err.value.problems)
    assert "institution_region 'NL-XX' is not one of" in text
    policy_file = str((tmp_path / "policy.toml").resolve())
    assert f"{policy_file}: min_n_min must be a whole number" in text
    assert f"{policy_file}: max_cells must be a whole number" in text
    assert f"{policy_file}: unknown field(s) whatever" in text


@pytest.mark.parametrize(
    ("policy", "files", "problem"),
    [
        ('file = "policy.toml"\nmin_n_min = 3\n', {"policy.toml": ""}, "keep the policy in one"),
        ('file = "missing.toml"\n', {}, "missing.toml: file not found"),
        ('file = "bad.toml"\n', {"bad.toml": "min_n_min = \n"}, "not valid TOML"),
        ('file = "loop.toml"\n', {"loop.toml": 'file = "x"\n'}, "cannot name another policy"),
        ("file = 3\n", {}, "policy.file must be a file name"),
    ],
)
def test_policy_file_mistakes(
    tmp_path: Path, policy: str, files: dict[str, str], problem: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load_config(node_toml(tmp_path, policy=policy))


def test_the_per_task_cap_in_budget_still_works_but_not_twice(tmp_path: Path) -> None:
    budget = 'rho_cap = "1.0"\nmax_rho_per_task = "0.3"\n'
    config = load_config(node_toml(tmp_path, budget=budget))
    assert config.policy.max_rho_per_task == Rho.parse("0.3")
    assert config.institution_region == "UNKNOWN"  # the default
    twice = node_toml(tmp_path, budget=budget, policy='max_rho_per_task = "0.2"\n')
    with pytest.raises(ConfigError, match="set both in \\[budget\\] and in the policy"):
        load_config(twice)


# --- the handler asks the policy before charging -------------------------------------------------


@pytest.fixture
def handler(tmp_path: Path, tickets_file: Callable[..., Path]) -> TaskHandler:
    rows = [ticket_row(ticket_id=f"T{i}", customer_id=f"C{i % 5}") for i in range(20)]
    ledger = Ledger(tmp_path / "ledger.sqlite", BudgetCap(Rho.parse("1"), Period.TOTAL))
    policy = parse_policy({"allowed_modes": ["open", "secure"], "max_rho_per_run": "0.25"})
    pki = make_dev_pki(tmp_path / "pki", ["inst-01", "inst-02"])
    return TaskHandler(
        NodeIdentity("inst-01", "theatre"),
        load_ticket_lines(tickets_file(rows)),
        ledger,
        policy,
        signer=Signer.from_files("inst-01", pki.nodes["inst-01"].cert, pki.nodes["inst-01"].key),
        verifier=PeerVerifier(pki.ca.read_bytes()),
    )


def test_the_run_cap_counts_the_runs_earlier_tasks_but_not_a_retry(handler: TaskHandler) -> None:
    q = query(mode=ReleaseMode.OPEN)
    first = handler.handle(Task("r1/a", "r1", "a", 60_000, q), "coord")
    second = handler.handle(Task("r1/b", "r1", "b", 60_000, q), "coord")
    assert isinstance(first.outcome, HistogramAnswer)
    assert isinstance(second.outcome, HistogramAnswer)
    assert handler.ledger.spent_in_run("r1") == Rho.parse("0.2")
    third = handler.handle(Task("r1/c", "r1", "c", 60_000, q), "coord")
    assert isinstance(third.outcome, ErrorInfo)
    assert third.outcome.code is ErrorCode.POLICY_REFUSED
    assert "would cost rho 0.3 (rho 0.2 spent on its other tasks)" in third.outcome.message
    # Asking again about a task already answered is not a new cost: the stored answer comes back.
    again = handler.handle(Task("r1/b", "r1", "b", 60_000, q), "coord")
    assert isinstance(again.outcome, HistogramAnswer) and again.outcome.replayed
    # Another run starts from zero; the ledger kept the refusal with its reason.
    other = handler.handle(Task("r2/a", "r2", "a", 60_000, q), "coord")
    assert isinstance(other.outcome, HistogramAnswer)
    [refusal] = handler.ledger.refusals()
    assert refusal.code == "POLICY_REFUSED" and "one run may cost" in refusal.reason
    assert handler.ledger.spent() == Rho.parse("0.3")


def test_a_secure_round_below_the_nodes_n_min_is_refused_at_setup(handler: TaskHandler) -> None:
    setup = SecAggSetup(query(), ("inst-01", "inst-02"), n_min=1, degree=1, threshold=1)
    task = Task("r3/a", "r3", "a", 60_000, SecAggRequest("round-1", setup))
    result = handler.handle(task, "coord")
    assert isinstance(result.outcome, ErrorInfo)
    assert result.outcome.code is ErrorCode.POLICY_REFUSED
    assert "as few as 1 institution(s)" in result.outcome.message
    assert handler.ledger.entries() == []  # nothing charged
    ok = SecAggSetup(query(), ("inst-01", "inst-02"), n_min=2, degree=1, threshold=1)
    accepted = handler.handle(Task("r3/b", "r3", "b", 60_000, SecAggRequest("round-2", ok)), "c")
    assert not isinstance(accepted.outcome, ErrorInfo)


def test_the_ledger_sums_a_run_over_every_period(tmp_path: Path) -> None:
    now = [datetime(2024, 12, 31, 23, 0, tzinfo=UTC)]
    ledger = Ledger(tmp_path / "l.sqlite", BudgetCap(Rho.parse("1"), Period.YEAR), lambda: now[0])

    def charge(task: str, run: str, rho: str) -> None:
        ledger.begin(ChargeRequest(task, "d", run, "a", "c", "x", "secure", Rho.parse(rho)))

    charge("t1", "run-a", "0.1")
    now[0] = datetime(2025, 1, 1, 1, 0, tzinfo=UTC)  # a run that crosses new year
    charge("t2", "run-a", "0.05")
    charge("t3", "run-b", "0.2")
    assert ledger.spent_in_run("run-a") == Rho.parse("0.15")
    assert ledger.spent_in_run("run-a", excluding="t1") == Rho.parse("0.05")
    assert ledger.spent_in_run("run-c") == Rho.zero()
    assert ledger.spent() == Rho.parse("0.25")  # this year's period only
