"""simulation.yaml: the vendored copy, its parsing and validation; SectorConfig validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from protocols.vocabulary import CHANNELS, INSTITUTION_TYPES, PRICE_TYPES
from synthetic import SectorConfig
from synthetic.institutions import allocate_largest_remainder
from synthetic.params import DEFAULT_PARAMS_PATH, ParamsError, PmfBin, load_params, parse_params
from synthetic.segments import N_SEGMENTS, check_segments

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_YAML = REPO_ROOT.parent / "shared" / "domain" / "simulation.yaml"


def _raw() -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(DEFAULT_PARAMS_PATH.read_text(encoding="utf-8"))
    return raw


def test_vendored_yaml_is_identical_to_the_shared_domain_file():
    if not SHARED_YAML.is_file():
        pytest.skip(f"{SHARED_YAML} is not present (the shared domain notes live outside the repo)")
    assert DEFAULT_PARAMS_PATH.read_bytes() == SHARED_YAML.read_bytes()


def test_params_load_with_every_vocabulary_known():
    params = load_params()
    assert set(params.institutions.type_mix) == set(INSTITUTION_TYPES)
    assert set(params.orders.channel_mix) <= set(CHANNELS)
    assert set(params.price_type_mix) <= set(PRICE_TYPES)
    assert params.population.latent_segments == N_SEGMENTS
    check_segments(params)  # raises if the segment table and the YAML disagree


def test_binned_pmfs_are_parsed_into_ordered_bins():
    bins = load_params().frequency.pmf
    assert [(b.low, b.high) for b in bins] == [(1, 1), (2, 2), (3, 5), (6, 10), (11, None)]
    assert [b.label for b in bins] == ["1", "2", "3-5", "6-10", ">10"]
    assert sum(b.probability for b in bins) == pytest.approx(1.0)
    assert PmfBin(11, None, 0.1).contains(500)
    assert not PmfBin(3, 5, 0.1).contains(6)


def test_activity_index_uses_the_table_and_its_last_value_beyond_it():
    params = load_params()
    assert params.activity_index(2020) == pytest.approx(0.27)
    assert params.activity_index(2024) == pytest.approx(1.14)
    assert params.activity_index(2031) == pytest.approx(1.14)
    assert params.activity_index(2010) == pytest.approx(1.0)


def test_missing_key_is_a_clear_error():
    raw = _raw()
    del raw["orders"]["channel"]
    with pytest.raises(ParamsError, match="channel"):
        parse_params(raw)


def test_shares_that_do_not_sum_to_one_are_rejected():
    raw = _raw()
    raw["price_type_mix"]["full"] = 0.9
    with pytest.raises(ParamsError, match="sum"):
        parse_params(raw)


def test_unknown_vocabulary_codes_are_rejected():
    raw = _raw()
    raw["orders"]["channel"]["carrier_pigeon"] = raw["orders"]["channel"].pop("phone")
    with pytest.raises(ParamsError, match="carrier_pigeon"):
        parse_params(raw)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_institutions": 0}, "n_institutions"),
        ({"n_institutions": True}, "integer"),
        ({"n_institutions": 2.5}, "integer"),
        ({"seed": -1}, "seed"),
        ({"years": (2024, 2023)}, "before"),
        ({"years": (2024,)}, "pair"),
        ({"years": (1800, 2024)}, "first year"),
        ({"years": (2000, 2030)}, "at most"),
        ({"scale": 0.0}, "scale"),
        ({"scale": "big"}, "scale"),
        ({"scale": 100.0}, "scale"),
    ],
)
def test_sector_config_rejects_bad_values_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SectorConfig(**kwargs)


def test_sector_config_normalises_years_and_round_trips_through_a_dict():
    config = SectorConfig(n_institutions=3, seed=5, years=[2022, 2024], scale=1)  # type: ignore[arg-type]
    assert config.years == (2022, 2024)
    assert isinstance(config.scale, float)
    assert config.year_list == (2022, 2023, 2024)
    assert SectorConfig.from_dict(config.to_dict()) == config


@given(
    shares=st.lists(st.floats(0.01, 1.0), min_size=1, max_size=8),
    n=st.integers(0, 300),
    seed=st.integers(0, 2**32 - 1),
)
def test_largest_remainder_gives_floor_or_ceiling_of_every_quota(shares, n, seed):
    total = sum(shares)
    mix = {f"k{i}": s / total for i, s in enumerate(shares)}
    counts = allocate_largest_remainder(mix, n, np.random.default_rng(seed))
    assert sum(counts.values()) == n
    for key, share in mix.items():
        quota = share * n
        assert np.floor(quota) - 1e-9 <= counts[key] <= np.ceil(quota) + 1e-9


def test_twelve_institutions_get_a_sensible_type_mix():
    counts = allocate_largest_remainder(
        load_params().institutions.type_mix, 12, np.random.default_rng(0)
    )
    assert counts["theatre"] == 4  # 35% of 12 = 4.2
    assert counts["museum"] == 2  # 15% of 12 = 1.8
    assert all(c >= 0 for c in counts.values())
    assert sum(counts.values()) == 12
