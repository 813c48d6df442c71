"""Reach sketches at the node and the estimator: bounds, refusals, noise and accuracy.

The sector is synthetic with person-level truth (the generator's person ids), so the estimator
is checked against the true number of distinct people, not against itself.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest
from scipy import stats

from coordinator.reach_estimate import key_estimates
from deploy.devcerts import make_dev_pki
from node.data import LoadedData, load
from node.handler import NodeIdentity, TaskHandler
from node.ingest.matchkey import MatchKeySecret
from node.ingest.pipeline import IngestSettings
from node.ingest.sources import file_source
from node.ledger import BudgetCap, Ledger, Period
from node.policy import Policy
from node.reach import ReachData, reach_contribution
from privacy.budget import Rho
from privacy.reach import geometric_reach, moments
from protocols.errors import ErrorCode, MalformedMessage
from protocols.geography import REGIONS
from protocols.identity import PeerVerifier, Signer
from protocols.messages import Dimension, ErrorInfo, ReleaseMode, Task
from protocols.reach import SECTOR_KEYS, ReachQuery
from protocols.secagg import SecAggRequest, SecAggSetup, noise_share
from protocols.serde import _reach_from_pb, _reach_to_pb
from protocols.v1 import federation_pb2 as pb
from protocols.vocabulary import COUNTED_STATUSES, DISCIPLINES
from synthetic import Sector, SectorConfig, generate_sector

YEAR = 2024


def _total(vectors: Iterable[npt.NDArray[np.int64]]) -> npt.NDArray[np.int64]:
    out: npt.NDArray[np.int64] = np.sum(np.stack(list(vectors)), axis=0)
    return out


def sector_query(buckets: int = 256, rho: str = "0.02", salt: str = "t") -> ReachQuery:
    return ReachQuery(
        "S7", Dimension("sector", SECTOR_KEYS), buckets, 1, (YEAR, YEAR), Rho.parse(rho), salt
    )


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Sector, dict[str, LoadedData], dict[str, ReachData]]:
    out = tmp_path_factory.mktemp("sector")
    sec = generate_sector(SectorConfig(n_institutions=12, seed=5, years=(YEAR, YEAR), scale=0.1))
    sec.write(out)
    secret = MatchKeySecret(key=secrets.token_bytes(32), source=out / "match.key")
    loaded = {}
    data = {}
    for inst in sec.institutions:
        nid = inst.institution_id
        loaded[nid] = load(
            file_source(out / nid / "ticket_line.csv"), IngestSettings(match_key=secret)
        )
        data[nid] = ReachData.build(loaded[nid].table, loaded[nid].match_keys, inst.type)
    return sec, loaded, data


def test_each_person_adds_one_bucket_per_key_at_most_max_cells_keys(
    world: tuple[Sector, dict[str, LoadedData], dict[str, ReachData]],
) -> None:
    _, _, data = world
    d = next(iter(data.values()))
    sector = reach_contribution(sector_query(), d)
    people = d.visits.filter((pl.col("person") >= 0) & (pl.col("year") == str(YEAR)))
    keyless = d.visits.filter((pl.col("person") < 0) & (pl.col("year") == str(YEAR)))
    assert sector[:256].sum() == people["person"].n_unique()
    assert sector[256] == keyless["unit"].n_unique()
    by_discipline = ReachQuery(
        "S9", Dimension("discipline", DISCIPLINES), 64, 3, (YEAR, YEAR), Rho.parse("0.02"), "t"
    )
    vector = reach_contribution(by_discipline, d).reshape(len(DISCIPLINES), 65)
    # Each person counts in each of its disciplines at most once, in at most three of them.
    per_person = people.group_by("person").agg(pl.col("discipline").n_unique().clip(0, 3))
    assert vector[:, :64].sum() == per_person["discipline"].sum()
    # The same person lands in the same bucket in every key (the hash is the person's).
    assert by_discipline.l2_sensitivity == pytest.approx(math.sqrt(3))


def test_one_person_is_in_the_same_bucket_at_every_institution(
    world: tuple[Sector, dict[str, LoadedData], dict[str, ReachData]],
) -> None:
    _, _, data = world
    q = sector_query(buckets=65_536)
    total = _total(reach_contribution(q, d)[: q.buckets] for d in data.values())
    # With 65,536 buckets collisions are rare: buckets holding more than one count are mostly
    # people seen at several institutions, which is what the sketch is for.
    assert int((total >= 2).sum()) > 50


def test_estimator_finds_the_true_sector_reach(
    world: tuple[Sector, dict[str, LoadedData], dict[str, ReachData]],
) -> None:
    sec, _, data = world
    truth = sec.truth.reach(YEAR)
    q = sector_query(buckets=512, rho="0.01")
    ids = tuple(sorted(data))
    setup = SecAggSetup(q, ids, n_min=len(ids), degree=len(ids) - 1, threshold=6)
    noise = noise_share(setup)
    exact = _total(reach_contribution(q, d) for d in data.values())
    noisy = _total(noise.share.sample(reach_contribution(q, d)) for d in data.values())
    clean = key_estimates(q, exact, 0.0)[0].reach.reach
    est = key_estimates(q, noisy, len(ids) * noise.share_scale**2)[0].reach
    # Noise-free only the model and the hashing err. Measured on this sector: +2% to +10%
    # over buckets 256..8192 and three salts (the geometric model misses part of the people
    # seen twice); 12% is the bound the documentation states for a sector this small.
    assert abs(clean - truth) / truth < 0.12
    # With noise (rho 0.01 per node): within the stated interval's 4.5 sd plus that bias.
    assert abs(est.reach - truth) <= 0.12 * truth + 4.5 * est.reach_sd
    # Counting people once per institution instead would be far off: de-duplication matters,
    # and the estimate is closer to the truth than that sum.
    summed = float(np.sum(exact[: q.buckets])) + float(exact[q.buckets])
    assert summed > truth * 1.08
    assert abs(clean - truth) < summed - truth


def test_secure_noise_in_the_sketch_has_the_stated_variance() -> None:
    """Sum of noise shares over 6 nodes on a 15 x 1025-cell sketch: the sample variance is
    within 5 sd of its expected value (false alarm below 1e-6 by a chi-square bound); a noise
    scale 30% smaller or larger would be rejected (each is more than 20 sd away)."""
    q = ReachQuery(
        "S9", Dimension("discipline", DISCIPLINES), 1024, 3, (YEAR, YEAR), Rho.parse("0.02"), "n"
    )
    ids = tuple(f"i{k}" for k in range(6))
    setup = SecAggSetup(q, ids, n_min=4, degree=5, threshold=3)
    noise = noise_share(setup)
    zeros = np.zeros(q.n_cells, dtype=np.int64)
    total = _total(noise.share.sample(zeros) for _ in ids)
    n = total.size
    variance = 6 * noise.share_scale**2
    statistic = float(np.sum(total.astype(np.float64) ** 2)) / variance
    low, high = stats.chi2.ppf([5e-7, 1 - 5e-7], n)
    assert low < statistic < high
    for wrong in (0.7, 1.3):
        assert not low < statistic / wrong**2 < high


def _setup_task(query: ReachQuery, n_min: int = 3) -> Task:
    ids = ("inst-01", "inst-02", "inst-03")
    setup = SecAggSetup(query, ids, n_min=n_min, degree=2, threshold=2)
    return Task("t-1", "run-1", "reach_sector", 60_000, SecAggRequest("round-1", setup))


@pytest.fixture(scope="module")
def some_reach(
    world: tuple[Sector, dict[str, LoadedData], dict[str, ReachData]],
) -> tuple[LoadedData, ReachData]:
    _, loaded, data = world
    nid = next(iter(data))
    return loaded[nid], data[nid]


@pytest.mark.parametrize(
    ("query", "n_min", "policy", "code", "words"),
    [
        (sector_query(), 1, None, ErrorCode.POLICY_REFUSED, "n_min"),
        (sector_query(rho="0.9"), 3, None, ErrorCode.POLICY_REFUSED, "at most rho"),
        (
            sector_query(),
            3,
            Policy(allowed_statistics=frozenset({"S1"})),
            ErrorCode.POLICY_REFUSED,
            "S7",
        ),
        (
            sector_query(buckets=65_536),
            3,
            Policy(max_cells=10_000),
            ErrorCode.POLICY_REFUSED,
            "cells",
        ),
    ],
)
def test_hostile_reach_queries_are_refused_and_cost_nothing(
    tmp_path: Path,
    some_reach: tuple[LoadedData, ReachData],
    query: ReachQuery,
    n_min: int,
    policy: Policy | None,
    code: ErrorCode,
    words: str,
) -> None:
    loaded, reach = some_reach
    handler = _handler(tmp_path, loaded, reach, policy)
    result = handler.handle(_setup_task(query, n_min), "coordinator")
    assert isinstance(result.outcome, ErrorInfo)
    assert result.outcome.code is code
    assert words in result.outcome.message
    assert handler.ledger.entries() == []
    assert handler.ledger.remaining() == Rho.parse("1")


def test_a_node_without_match_keys_says_so(
    tmp_path: Path, some_reach: tuple[LoadedData, ReachData]
) -> None:
    loaded, _ = some_reach
    handler = _handler(tmp_path, loaded, None)
    result = handler.handle(_setup_task(sector_query()), "coordinator")
    assert isinstance(result.outcome, ErrorInfo)
    assert result.outcome.code is ErrorCode.DATA_UNAVAILABLE
    assert "match keys" in result.outcome.message
    assert handler.ledger.entries() == []


def test_malformed_reach_queries_are_refused_on_decoding() -> None:
    msg = _reach_to_pb(sector_query())
    msg.mode = pb.RELEASE_MODE_OPEN  # the coordinator would see this node's own sketch
    with pytest.raises(MalformedMessage, match="secure mode only"):
        _reach_from_pb(msg)
    region = _reach_to_pb(sector_query())
    region.by.name = "region"
    del region.by.keys[:]
    region.by.keys.extend(r.code for r in REGIONS)
    region.max_cells = 2  # a person has one home region
    with pytest.raises(MalformedMessage, match="max_cells 1"):
        _reach_from_pb(region)
    salted = _reach_to_pb(sector_query())
    salted.salt = ""
    with pytest.raises(MalformedMessage, match="salt"):
        _reach_from_pb(salted)
    big = _reach_to_pb(sector_query())
    big.buckets = 10_000_000
    with pytest.raises(MalformedMessage, match="buckets"):
        _reach_from_pb(big)


def _handler(
    tmp_path: Path, loaded: LoadedData, reach: ReachData | None, policy: Policy | None = None
) -> TaskHandler:
    pki = make_dev_pki(tmp_path / "pki", ["inst-01"])
    ledger = Ledger(tmp_path / "ledger.sqlite", BudgetCap(Rho.parse("1"), Period.YEAR))
    return TaskHandler(
        NodeIdentity("inst-01", "theatre"),
        loaded.table,
        ledger,
        policy or Policy(allowed_modes=frozenset({ReleaseMode.SECURE})),
        signer=Signer.from_files("inst-01", pki.nodes["inst-01"].cert, pki.nodes["inst-01"].key),
        verifier=PeerVerifier.from_file(pki.ca),
        reach=reach,
    )


def test_geometric_model_is_exact_on_geometric_data() -> None:
    # K - 1 geometric with p = 0.2: noise-free, the estimator recovers the number of people up
    # to the hashing's error (about 1% at 4 buckets per person).
    p, people = 0.2, 20_000
    k = np.arange(1, 40)
    share = (1 - p) * p ** (k - 1)
    counts = np.repeat(k, np.round(share * people).astype(int))
    # People spread over 4x as many buckets by a hash (collisions as the real sketch has them).
    m = counts.size * 4
    where = [
        int.from_bytes(hashlib.sha256(str(i).encode()).digest()[:8], "big") % m
        for i in range(counts.size)
    ]
    sketch = np.zeros(m)
    np.add.at(sketch, where, counts)
    est = geometric_reach(moments(sketch, 0.0))
    assert est.reach == pytest.approx(counts.size, rel=0.03)
    assert est.p == pytest.approx(p, abs=0.03)


def test_counted_statuses_are_what_the_sketch_counts(
    some_reach: tuple[LoadedData, ReachData],
) -> None:
    loaded, reach = some_reach
    counted_units = (
        loaded.table.frame.filter(
            pl.col("has_account") & pl.col("order_status").is_in(COUNTED_STATUSES)
        )["unit"]
        .unique()
        .len()
    )
    assert reach.visits["unit"].n_unique() == counted_units
