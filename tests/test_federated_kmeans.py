"""The library API (``federated.FederatedKMeans``): scikit-learn style fit / predict on a numeric
matrix partitioned over nodes, run in one process over the in-process transport with real
secure-aggregation clients. It recovers well-separated clusters, charges every part exactly what
the model card says (never more than the budget), draws every round's noise from OpenDP on the
nodes at the round's own scale, and refuses bad input with a clear error before any round."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from federated import FederatedKMeans
from privacy.budget import Rho
from privacy.clustering import steps
from privacy.noise import DiscreteGaussian

TRUE_CENTRES = np.array([[0.2, 0.2], [0.8, 0.25], [0.5, 0.8]])
SEED = bytes(range(32))


def blobs(parts: int, rows: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Three well-separated blobs (sd 0.04, centres at least 0.6 apart), split over parts."""
    rng = np.random.default_rng(seed)  # test data, not noise
    xs, labels = [], []
    for _ in range(parts):
        label = rng.integers(0, 3, rows)
        xs.append(np.clip(TRUE_CENTRES[label] + rng.normal(0, 0.04, (rows, 2)), 0, 1))
        labels.append(label)
    return xs, labels


def _matched(found: np.ndarray) -> np.ndarray:
    """The found centres in the order of TRUE_CENTRES (each true centre's nearest)."""
    d = ((TRUE_CENTRES[:, None, :] - found[None, :, :]) ** 2).sum(axis=2)
    order = d.argmin(axis=1)
    assert len(set(order.tolist())) == 3, "two true clusters share one centre"
    return np.asarray(found[order])


@pytest.fixture(scope="module")
def fitted() -> tuple[FederatedKMeans, list[np.ndarray], list[np.ndarray], list[tuple[Any, ...]]]:
    parts, labels = blobs(3, 1500, seed=1)
    model = FederatedKMeans(
        3, epsilon=1.0, bounds=[(0, 1), (0, 1)], max_lloyd_rounds=4, max_depth=8, seed=SEED
    )
    draws: list[tuple[Any, ...]] = []
    real_sample = DiscreteGaussian.sample

    def recording(self: DiscreteGaussian, values: Any, *, parallel: bool = True) -> Any:
        # The real OpenDP sampler, only watched: which scale, how many values.
        draws.append((self.scale, len(values)))
        return real_sample(self, values, parallel=parallel)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DiscreteGaussian, "sample", recording)
        model.fit(parts)
    return model, parts, labels, draws


def test_it_recovers_well_separated_clusters(
    fitted: tuple[FederatedKMeans, list[np.ndarray], list[np.ndarray], list[tuple[Any, ...]]],
) -> None:
    from sklearn.metrics import adjusted_rand_score

    model, parts, labels, _ = fitted
    assert model.cluster_centers_.shape == (3, 2)
    centres = _matched(model.cluster_centers_)
    # 4,500 points at epsilon 1: a centre is off by about 0.01 (largest of 120 fits 0.040, a
    # false alarm near 1e-5); random centres by ~0.3.
    assert np.abs(centres - TRUE_CENTRES).max() < 0.05
    x, truth = np.vstack(parts), np.concatenate(labels)
    assert adjusted_rand_score(truth, model.predict(x)) > 0.95
    assert [len(lab) for lab in model.labels_] == [p.shape[0] for p in parts]
    # Its cost is that of the true centres up to noise (the blobs' own spread: 2 * 0.04^2).
    # Over 120 fits the ratio was 1.062 +- 0.035, at most 1.228 (a scaled chi-square with about
    # 6 degrees of freedom: above 1.5 below 1e-8); a fit that merges two clusters is many
    # times worse.
    assert model.cost(x) / x.shape[0] < 1.5 * 2 * 0.04**2
    # predict works on rows it never saw, in the features' own units
    assert model.predict([[0.21, 0.19], [0.5, 0.79]]).tolist() == [
        int(model.predict([c])[0]) for c in TRUE_CENTRES[[0, 2]]
    ]


def test_each_part_is_charged_what_the_card_says_within_the_budget(
    fitted: tuple[FederatedKMeans, list[np.ndarray], list[np.ndarray], list[tuple[Any, ...]]],
) -> None:
    model, parts, _, _ = fitted
    card = model.model_card_
    spent = Rho.parse(card["privacy"]["rho_spent"])
    assert spent == model.spent_rho_ <= model.rho
    assert model.node_spent_ == {f"part-{i:04d}": spent for i in range(len(parts))}
    assert sum(Rho.parse(r["rho"]).value for r in card["rounds"]) == spent.value
    assert 0 < model.epsilon_spent_ <= 1.0
    assert card["privacy"]["n_min"] == 3
    assert all(r["contributors"] == 3 for r in card["rounds"])


def test_every_round_adds_opendp_noise_at_its_own_scale_on_every_part(
    fitted: tuple[FederatedKMeans, list[np.ndarray], list[np.ndarray], list[tuple[Any, ...]]],
) -> None:
    model, parts, _, draws = fitted
    rounds = model.model_card_["rounds"]
    # One OpenDP draw per part per round, over the round's whole vector ...
    assert len(draws) == len(parts) * len(rounds)
    for i, r in enumerate(rounds):
        mine = draws[i * len(parts) : (i + 1) * len(parts)]
        assert [n for _, n in mine] == [r["values"]] * len(parts)
        # ... at the share scale whose sum over the 3 parts is the round's stated noise sd.
        total = r["noise_sd"] * steps.SCALE
        for scale, _ in mine:
            assert scale * math.sqrt(len(parts)) == pytest.approx(total, rel=1e-9)
    # and the noise is real: a second fit with the same public seed gives other centres.
    again = FederatedKMeans(
        3, epsilon=1.0, bounds=[(0, 1), (0, 1)], max_lloyd_rounds=4, max_depth=8, seed=SEED
    ).fit(parts)
    assert not np.array_equal(again.cluster_centers_, model.cluster_centers_)


GOOD: dict[str, Any] = {"bounds": [(0, 1), (0, 1)]}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"n_clusters": 0, **GOOD}, "k must be 1..64"),
        ({"n_clusters": 65, **GOOD}, "k must be 1..64"),
        ({"epsilon": -1.0, **GOOD}, "epsilon must be positive"),
        ({"epsilon": None, **GOOD}, "either epsilon or rho"),
        ({"bounds": [(1, 0)]}, "low < high"),
        ({"bounds": [(0, math.inf)]}, "finite"),
        ({}, "either bounds or space"),
        ({"n_min": 0, **GOOD}, "n_min must be a positive"),
        ({"seed": b"short", **GOOD}, "seed must be 32 bytes"),
        ({"max_lloyd_rounds": 0, **GOOD}, "max_lloyd_rounds must be 1..50"),
    ],
)
def test_bad_settings_are_refused_when_made(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FederatedKMeans(**settings)


def test_bad_data_is_refused_before_any_round() -> None:
    parts, _ = blobs(2, 50, seed=2)
    model = FederatedKMeans(3, **GOOD)
    with pytest.raises(ValueError, match="at least two parts"):
        model.fit([parts[0]])
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.fit([parts[0], np.full((4, 2), np.nan)])
    with pytest.raises(ValueError, match=r"expected rows of 2 features, got shape \(4, 3\)"):
        model.fit([parts[0], np.zeros((4, 3))])
    with pytest.raises(ValueError, match="could not convert"):
        model.fit([parts[0], [["a", "b"]]])
    with pytest.raises(ValueError, match="n_min = 3 parts must survive, but only 2"):
        FederatedKMeans(3, n_min=3, **GOOD).fit(parts)
    with pytest.raises(ValueError, match="not fitted yet"):
        model.predict(parts[0])
    assert not hasattr(model, "result_")


def test_too_little_data_for_a_private_model_says_so() -> None:
    from coordinator.segmentation import SegmentationFailed

    # Ten customers at epsilon 0.1: whether there is enough data is itself read from noisy
    # counts, so noise lets about 1 fit in 5 go through (12 of 60 measured; such a model is
    # still private, and useless). 20 attempts, at least 8 refusals: with a refusal rate of
    # 0.8 this fails once in about 10^5 runs; a check that never refused would fail always.
    refusals = []
    for _ in range(20):
        parts, _ = blobs(2, 5, seed=3)
        try:
            FederatedKMeans(3, epsilon=0.1, **GOOD).fit(parts)
        except SegmentationFailed as err:
            refusals.append(str(err))
    assert len(refusals) >= 8, refusals
    assert all("too few for a private segmentation" in r for r in refusals), refusals
