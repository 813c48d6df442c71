"""The math of the federated k-means: feature space, partition tree, per-step contributions and
their sensitivity, decoding, the coreset k-means and the budget schedule."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.budget import Rho, compose
from privacy.clustering import steps
from privacy.clustering.budget import FINAL_WEIGHT, Schedule, growth_rule
from privacy.clustering.coreset import weighted_cost, weighted_kmeans
from privacy.clustering.public_random import PublicRandom
from privacy.clustering.space import Feature, FeatureSpace, InvalidSpace
from privacy.clustering.steps import LloydStep, TreeLeaves, TreeLevel
from privacy.clustering.tree import ROOT, GrowthRule, InvalidTree, PartitionTree, grow
from protocols.features import ALL_FEATURES, NUMERIC_FEATURES, customer_space

SEED = bytes(range(32))


def _customer_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Rows anywhere in the customer space: numeric in [0, 1], discipline shares on the simplex."""
    numeric = rng.random((n, len(NUMERIC_FEATURES)))
    numeric[: n // 4] = rng.integers(0, 2, size=(n // 4, len(NUMERIC_FEATURES)))  # corners
    mix = rng.dirichlet(np.full(15, 0.3), size=n)
    mix[: n // 4] = np.eye(15)[rng.integers(0, 15, size=n // 4)]  # one discipline only
    return np.hstack([numeric, mix])


def test_scaling_round_trips_and_clips_to_the_public_bounds() -> None:
    lin, log = Feature("a", 0, 10), Feature("b", 0, 2000, "log")
    values = np.array([-5.0, 0.0, 1.0, 10.0, 30.0])
    assert lin.scale(values).tolist() == [0.0, 0.0, 0.1, 1.0, 1.0]
    assert log.scale([0.0, 2000.0, 5000.0]).tolist() == [0.0, 1.0, 1.0]
    # log scale: 1 + v, so 0 -> 0 and one euro is already a little above 0
    assert log.scale([1.0])[0] == pytest.approx(math.log(2) / math.log(2001))
    inside = np.array([0.0, 3.5, 99.0, 2000.0])
    assert log.unscale(log.scale(inside)) == pytest.approx(inside)
    assert lin.unscale(lin.scale([2.5])) == pytest.approx([2.5])


def test_invalid_spaces_are_refused() -> None:
    with pytest.raises(InvalidSpace):
        Feature("a", 1, 1)
    with pytest.raises(InvalidSpace):
        Feature("a", 0, 1, "sqrt")
    f = (Feature("a", 0, 1), Feature("b", 0, 1))
    with pytest.raises(InvalidSpace):
        FeatureSpace(f, (0.5,), 1.0)  # origin of the wrong length
    with pytest.raises(InvalidSpace):
        FeatureSpace(f, (0.5, 0.5), 2.0)  # radius above sqrt(d)
    with pytest.raises(InvalidSpace):
        FeatureSpace((f[0], f[0]), (0.5, 0.5), 1.0)  # a feature twice


def test_the_customer_space_radius_is_exact() -> None:
    space = customer_space()
    assert space.names == tuple(f.name for f in ALL_FEATURES)
    rows = _customer_rows(np.random.default_rng(1), 4000)
    norms = np.linalg.norm(rows - np.asarray(space.origin), axis=1)
    assert norms.max() <= space.radius + 1e-12  # clipping never changes a customer's row
    assert space.centred(rows) == pytest.approx(rows - np.asarray(space.origin))
    corner = np.r_[np.ones(9), np.eye(15)[0]]
    assert np.linalg.norm(corner - np.asarray(space.origin)) == pytest.approx(space.radius)


def test_rows_outside_the_radius_are_scaled_onto_it() -> None:
    space = FeatureSpace.box((Feature("a", 0, 1), Feature("b", 0, 1)))
    small = FeatureSpace(space.features, space.origin, 0.1)
    x = small.centred([[1.0, 1.0], [0.55, 0.5]])
    assert np.linalg.norm(x[0]) == pytest.approx(0.1)
    assert x[0][0] == pytest.approx(x[0][1])  # direction kept
    assert x[1] == pytest.approx([0.05, 0.0])  # inside: unchanged


def _tree() -> PartitionTree:
    # level 0 splits on x at 0; level 1 splits on y at 0.5 (left) / -0.5 (right)
    return PartitionTree(((1.0, 0.0), (0.0, 1.0)), ((1, 0.0), (2, 0.5), (3, -0.5)))


def test_routing_follows_the_splits() -> None:
    rows = np.array([[-1.0, 1.0], [-1.0, 0.0], [1.0, 0.0], [1.0, -1.0], [0.0, -0.5]])
    assert _tree().route(rows).tolist() == [5, 4, 7, 6, 7]
    only_root = PartitionTree(((1.0, 0.0),), ((1, 0.0),))
    assert only_root.route(rows).tolist() == [2, 2, 3, 3, 3]
    assert PartitionTree(((1.0, 0.0),)).route(rows).tolist() == [1] * 5


@pytest.mark.parametrize(
    ("directions", "splits"),
    [
        (((1.0, 0.0),), ((2, 0.0),)),  # a split cell whose parent is not split
        (((1.0, 0.0), (0.0, 1.0)), ((1, 0.0), (3, 0.0), (2, 0.0))),  # not sorted
        (((2.0, 0.0),), ()),  # not a unit vector
        (((1.0, 0.0),), ((1, math.inf),)),
        (((1.0, 0.0),), ((1, 0.0), (2, 0.0))),  # deeper than the tree has levels
    ],
)
def test_malformed_trees_are_refused(
    directions: tuple[tuple[float, ...], ...], splits: tuple[tuple[int, float], ...]
) -> None:
    with pytest.raises(InvalidTree):
        PartitionTree(directions, splits)


def test_growth_drops_small_cells_splits_big_ones_and_keeps_the_rest_as_leaves() -> None:
    tree = PartitionTree(((1.0, 0.0), (0.0, 1.0), (1.0, 0.0)), ((1, 0.0),))
    rule = GrowthRule(min_points=10, min_branch=30, max_depth=3)
    g = grow(tree, (2, 3), np.array([5.0, 40.0]), np.array([0.0, 0.7]), (), rule)
    assert g.leaves == ()  # cell 2 dropped (5 < 10), cell 3 split
    assert dict(g.tree.splits)[3] == pytest.approx(0.7)
    assert g.frontier == (6, 7)
    g = grow(g.tree, (6, 7), np.array([20.0, 35.0]), np.array([0.0, 0.1]), g.leaves, rule)
    assert g.leaves == (6,) and g.frontier == (14, 15)
    # depth 3 is the limit: big cells there are leaves
    g = grow(g.tree, (14, 15), np.array([100.0, 12.0]), np.array([0.0, 0.0]), g.leaves, rule)
    assert g.leaves == (6, 14, 15) and g.frontier == ()


def _steps(space: FeatureSpace, rows: np.ndarray) -> list[steps.Step]:
    rng = PublicRandom(SEED, "test")
    d = rng.unit_vectors(4, space.dim)
    tree = PartitionTree(tuple(map(tuple, d)), ((1, 0.0), (2, 0.1), (3, -0.2)))
    centres = rows[:5]
    return [
        TreeLevel(tree, (4, 5, 6, 7)),
        TreeLevel(PartitionTree(tuple(map(tuple, d))), (ROOT,)),
        TreeLeaves(tree, (4, 5, 6, 7)),
        LloydStep(tuple(map(tuple, centres))),
    ]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), extra=st.integers(0, 399))
def test_one_customer_moves_every_step_by_at_most_its_sensitivity(seed: int, extra: int) -> None:
    space = customer_space()
    rows = _customer_rows(np.random.default_rng(seed), 400)
    base = rows[np.arange(400) != extra]
    for step in _steps(space, rows):
        change = steps.contribution(step, space, rows) - steps.contribution(step, space, base)
        assert np.linalg.norm(change) <= steps.l2_sensitivity(step, space.radius)
        assert np.abs(change).sum() <= steps.l1_sensitivity(step, space.radius)


def test_the_sensitivity_is_attained_up_to_rounding() -> None:
    """A customer in the far corner adds (almost) the full bound: the bound is not loose."""
    space = customer_space()
    corner = np.r_[np.ones(9), np.eye(15)[0]][None, :]
    step = TreeLeaves(PartitionTree(((1.0,) + (0.0,) * 23,)), (ROOT,))
    added = np.linalg.norm(steps.contribution(step, space, corner))
    assert added == pytest.approx(steps.SCALE * math.sqrt(1 + space.radius**2), rel=1e-3)


def test_decoding_a_noiseless_sum_gives_exact_counts_means_and_costs() -> None:
    space = customer_space()
    rows = _customer_rows(np.random.default_rng(3), 1000)
    centres = rows[:4]
    step = LloydStep(tuple(map(tuple, centres)))
    decoded = steps.decode(step, steps.contribution(step, space, rows))
    label = steps.nearest(rows, centres)
    assert decoded.counts.tolist() == np.bincount(label, minlength=4).tolist()
    want = np.vstack([rows[label == j].mean(axis=0) for j in range(4)])
    assert steps.means(space, decoded.counts, decoded.sums) == pytest.approx(want, abs=1e-3)
    # each customer's squared distance counts up to R^2 (its bound in the sum)
    d2 = np.minimum(((rows - centres[label]) ** 2).sum(axis=1), space.radius**2)
    assert (d2 == space.radius**2).any()  # some are clipped in this spread-out sample
    cost = steps.costs(step, space, decoded)
    for j in range(4):
        assert cost[j] == pytest.approx(d2[label == j].sum(), rel=1e-3, abs=0.5)


def test_a_level_round_gives_each_cells_mean_projection() -> None:
    space = customer_space()
    rows = _customer_rows(np.random.default_rng(4), 500)
    d = PublicRandom(SEED, "t").unit_vectors(3, space.dim)
    tree = PartitionTree(tuple(map(tuple, d)), ((1, 0.0),))
    step = TreeLevel(tree, (2, 3))
    decoded = steps.decode(step, steps.contribution(step, space, rows))
    x = space.centred(rows)
    cell = tree.route(x)
    for i, c in enumerate((2, 3)):
        inside = x[cell == c]
        assert decoded.counts[i] == inside.shape[0]
        want = (inside @ d[1]).mean()
        assert steps.mean_projections(step, decoded)[i] == pytest.approx(want, abs=1e-3)


def test_public_randomness_is_reproducible_and_looks_random() -> None:
    a, b = PublicRandom(SEED, "x"), PublicRandom(SEED, "x")
    assert a.normal(10).tolist() == b.normal(10).tolist()
    assert a.normal(10).tolist() != PublicRandom(SEED, "y").normal(10).tolist()
    z = PublicRandom(SEED, "stats").normal(40_000)
    # mean and sd of 40,000 standard normals: 6 standard errors, a false alarm < 1e-8
    assert abs(z.mean()) < 6 / math.sqrt(40_000)
    assert abs(z.std() - 1) < 6 * math.sqrt(0.5 / 40_000)
    v = PublicRandom(SEED, "u").unit_vectors(50, 7)
    assert np.linalg.norm(v, axis=1) == pytest.approx(np.ones(50))
    picks = [PublicRandom(SEED, f"c{i}").choice([0.0, 1.0, 0.0, 3.0]) for i in range(400)]
    assert set(picks) == {1, 3} and 60 < picks.count(1) < 140  # expected 100; sd 8.7


def test_the_coreset_kmeans_finds_well_separated_clusters() -> None:
    rng = np.random.default_rng(5)
    truth = np.array([[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]])
    points = np.vstack([c + rng.normal(0, 0.02, (40, 2)) for c in truth])
    weights = rng.integers(1, 50, points.shape[0]).astype(float)
    c = weighted_kmeans(points, weights, 3, PublicRandom(SEED, "k"))
    found = sorted(map(tuple, np.round(c, 1)))
    assert found == sorted(map(tuple, np.round(truth, 1)))
    again = weighted_kmeans(points, weights, 3, PublicRandom(SEED, "k"))
    assert again.tolist() == c.tolist()  # reproducible from the seed
    assert weighted_cost(points, weights, c) < weighted_cost(points, weights, truth[[0, 0, 1]])
    # fewer points than clusters: every point is a centre, the rest from the public box
    few = weighted_kmeans(points[:2], weights[:2], 4, PublicRandom(SEED, "k"))
    assert few.shape == (4, 2) and few[:2].tolist() == points[:2].tolist()


def test_the_schedule_spends_exactly_the_declared_budget() -> None:
    s = Schedule(Rho.parse("0.02"), k=11, max_depth=16, max_lloyd_rounds=6)
    assert s.most == s.total
    levels = [s.level_rho] * 17
    assert compose([*levels, s.leaves_rho, s.lloyd_share]) == s.total
    # stopping after 2 equal rounds, the final round takes the other 4 rounds' budget
    lloyd = [s.lloyd_rho(6, False), s.lloyd_rho(5, False), s.lloyd_rho(4, True)]
    assert compose(lloyd) == s.lloyd_share
    # running all 6, the last one is the final round: FINAL_WEIGHT shares, the others one each
    every = [s.lloyd_rho(left, False) for left in range(6, 0, -1)]
    assert compose(every) == s.lloyd_share
    assert every[-1].value == FINAL_WEIGHT * every[0].value
    assert len({r.value for r in every[:-1]}) == 1
    assert s.leaves_rho.value == Fraction(9, 20) * Fraction(2, 100)
    # a tree that needed 5 level rounds leaves 12 levels' budget to the leaf round
    after = s.leaves_rho_after(5)
    assert compose([*levels[:5], after, s.lloyd_share]) == s.total


def test_the_growth_rule_follows_the_leaf_noise_and_the_data_size() -> None:
    s = Schedule(Rho.parse("0.02"), k=11)
    big = growth_rule(s, 24, 1.8, 1e5)
    sd = math.sqrt(1 + 1.8**2) / math.sqrt(2 * float(s.leaves_rho))
    assert big.min_points == pytest.approx(1.5 * math.sqrt(24) * sd)
    assert big.min_branch == pytest.approx(3 * big.min_points)
    huge = growth_rule(s, 24, 1.8, 3e6)
    assert huge.min_points == pytest.approx(2000.0)  # at most 1,500 leaves
    small = growth_rule(s, 24, 1.8, 2200.0)
    assert small.min_points == pytest.approx(100.0)  # never more than half a cluster: 2200 / 22
