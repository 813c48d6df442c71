"""Customer features on a small export whose right answers can be worked out by hand."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from node.data import LoadedData, load
from node.features import AGE_BAND_KEYS, ALL_FEATURES, DISTANCE_BAND_KEYS
from node.geo import DistanceSource, Geography, Location, load_pc4_centroids
from node.ingest.pipeline import IngestSettings
from node.ingest.sources import file_source
from tests.conftest import ticket_row, write_tickets

AS_OF = date(2024, 12, 31)
UTRECHT = Location(52.0907, 5.1214)
DAM = (52.3731, 4.8922)  # the centroid we give postcode area 1012


def _t(**kw: Any) -> dict[str, Any]:
    return ticket_row(postcode="1012 AB", country="NL", birth_year="1970", **kw)


def rows() -> list[dict[str, Any]]:
    c1 = [
        _t(ticket_id="a1", order_id="O1", customer_id="C1", performance_id="P1",
           order_datetime="2024-02-01T20:00:00", performance_start="2024-03-01T20:00:00",
           discipline="toneel", price_type="full", price_paid_eur="25.00", channel="online_own"),
        _t(ticket_id="a2", order_id="O1", customer_id="C1", performance_id="P1",
           order_datetime="2024-02-01T20:00:00", performance_start="2024-03-01T20:00:00",
           discipline="toneel", price_type="full", price_paid_eur="25.00", channel="online_own"),
        _t(ticket_id="a3", order_id="O2", customer_id="C1", performance_id="P2",
           order_datetime="2024-05-31T20:00:00", performance_start="2024-06-01T20:00:00",
           discipline="dans", price_type="youth", price_paid_eur="10.00", channel="box_office"),
        _t(ticket_id="a4", order_id="O3", customer_id="C1", performance_id="P3",
           order_datetime="2023-05-02T20:00:00", performance_start="2023-06-01T20:00:00",
           discipline="toneel", price_type="full", price_paid_eur="30.00", channel="online_own"),
        _t(ticket_id="a5", order_id="O4", customer_id="C1", performance_id="P4",
           order_datetime="2024-06-02T20:00:00", performance_start="2024-07-01T20:00:00",
           discipline="film", price_type="full", price_paid_eur="9.00", order_status="refunded"),
    ]  # fmt: skip
    walk_in = [
        ticket_row(ticket_id="w1", order_id="W1", customer_id="", performance_id="P1",
                   order_datetime="2024-03-01T19:30:00", performance_start="2024-03-01T20:00:00",
                   discipline="toneel", price_paid_eur="25.00", channel="box_office",
                   postcode="", birth_year="")
    ]  # fmt: skip
    heavy = [
        ticket_row(ticket_id=f"h{i}", order_id=f"H{i}", customer_id="C3", performance_id=f"Q{i}",
                   order_datetime=f"2024-{1 + i % 12:02d}-01T10:00:00",
                   performance_start=f"2024-{1 + i % 12:02d}-{1 + i // 12:02d}T20:00:00",
                   discipline="film", price_type="full", price_paid_eur="100.00",
                   postcode="2000", country="BE", birth_year="2010")
        for i in range(30)
    ]  # fmt: skip
    return c1 + walk_in + heavy


@pytest.fixture
def pc4(tmp_path: Path) -> pl.DataFrame:
    path = tmp_path / "pc4.csv"
    path.write_text(f"country,area,lat,lon\nNL,1012,{DAM[0]},{DAM[1]}\nBE,2000,51.2194,4.4025\n")
    return load_pc4_centroids(path)


def _load(tmp_path: Path, geography: Geography | None = None) -> LoadedData:
    path = write_tickets(tmp_path / "t.csv", rows())
    return load(file_source(path), IngestSettings(today=AS_OF), geography, as_of=AS_OF)


def haversine(a: tuple[float, float], b: tuple[float, float]) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
    h = (
        math.sin((la2 - la1) / 2) ** 2
        + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    )
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def test_features_of_one_customer_by_hand(tmp_path: Path, pc4: pl.DataFrame) -> None:
    loaded = _load(tmp_path, Geography(location=UTRECHT, pc4=pc4))
    f = loaded.features
    assert f.as_of == AS_OF and f.distance_source is DistanceSource.PC4
    c1 = f.frame.filter(pl.col("has_account") & (pl.col("visits") == 3)).row(0, named=True)
    assert c1["tickets"] == 4  # the refunded ticket is no visit
    assert c1["frequency"] == 2  # P1 and P2; P3 is more than 12 months back
    # Last visit 2024-06-01 20:00; the as-of date ends at 2024-12-31 24:00: 213 days and 4 h.
    assert c1["recency_days"] == 213
    assert c1["spend_eur"] == pytest.approx(60.0)
    assert c1["mix_toneel"] == pytest.approx(2 / 3) and c1["mix_dans"] == pytest.approx(1 / 3)
    assert c1["mix_film"] == 0.0
    assert c1["lead_time_days"] == pytest.approx((29 + 1 + 30) / 3)
    assert c1["group_size"] == pytest.approx(4 / 3)
    assert c1["online_share"] == pytest.approx(2 / 3)
    assert c1["discount_share"] == pytest.approx(1 / 4)
    assert c1["age"] == 54 and c1["age_band"] == "50-64"
    assert c1["distance_km"] == pytest.approx(haversine(DAM, (UTRECHT.lat, UTRECHT.lon)), rel=1e-9)
    assert c1["distance_band"] == "30-60 km"
    assert c1["home_region"] == "NL-NH"


def test_bounds_are_applied(tmp_path: Path, pc4: pl.DataFrame) -> None:
    f = _load(tmp_path, Geography(location=UTRECHT, pc4=pc4)).features
    heavy = f.frame.filter(pl.col("visits") == 30).row(0, named=True)
    assert heavy["frequency"] == 24  # 30 visits, clipped to the public bound
    assert heavy["spend_eur"] == 2000  # 3000 euros, clipped
    assert heavy["age_band"] == "0-17" and heavy["home_region"] == "BE-VAN"
    for spec in ALL_FEATURES:
        column = f.frame[spec.name].drop_nulls()
        assert column.min() >= spec.low and column.max() <= spec.high, spec.name  # type: ignore[operator]
    norm = f.normalised().drop("unit")
    assert norm.select(pl.all().min()).min_horizontal().item() >= 0.0
    assert norm.select(pl.all().max()).max_horizontal().item() <= 1.0
    matrix = f.segmentation_matrix()
    assert matrix.shape == (3, len(ALL_FEATURES))
    assert np.isfinite(matrix).all()


def test_anonymous_walk_in_is_its_own_unit_with_unknowns(tmp_path: Path) -> None:
    f = _load(tmp_path, Geography(location=UTRECHT)).features
    walk_in = f.frame.filter(~pl.col("has_account")).row(0, named=True)
    assert walk_in["visits"] == 1 and walk_in["tickets"] == 1
    assert walk_in["age_band"] == "unknown" and walk_in["distance_band"] == "unknown"
    assert walk_in["home_region"] == "UNKNOWN"
    assert set(f.frame["age_band"]) <= set(AGE_BAND_KEYS)
    assert set(f.frame["distance_band"]) <= set(DISTANCE_BAND_KEYS)


def test_region_level_distance_without_a_pc4_table(tmp_path: Path) -> None:
    f = _load(tmp_path, Geography(location=UTRECHT)).features
    assert f.distance_source is DistanceSource.REGION
    c1 = f.frame.filter(pl.col("visits") == 3).row(0, named=True)
    noord_holland = (52.52, 4.79)  # protocols.geography's centroid of NL-NH
    assert c1["distance_km"] == pytest.approx(haversine(noord_holland, (52.0907, 5.1214)))


def test_no_location_means_no_distance(tmp_path: Path) -> None:
    f = _load(tmp_path).features
    assert f.distance_source is None
    assert f.frame["distance_km"].null_count() == f.frame.height


def test_venues_elsewhere_are_measured_from_their_own_location(
    tmp_path: Path, pc4: pl.DataFrame
) -> None:
    rows = [
        _t(ticket_id="x1", order_id="X1", customer_id="C9", venue_id="main"),
        _t(ticket_id="x2", order_id="X2", customer_id="C9", venue_id="zaal-2",
           performance_id="P9", performance_start="2024-02-16T20:00:00"),
    ]  # fmt: skip
    path = write_tickets(tmp_path / "v.csv", rows)
    zaal = Location(52.3600, 4.8800)
    geo = Geography(location=UTRECHT, venues=(("zaal-2", zaal),), pc4=pc4)
    f = load(file_source(path), IngestSettings(today=AS_OF), geo, as_of=AS_OF).features
    expected = (
        haversine(DAM, (UTRECHT.lat, UTRECHT.lon)) + haversine(DAM, (zaal.lat, zaal.lon))
    ) / 2
    assert f.frame["distance_km"][0] == pytest.approx(expected)


def test_a_broken_pc4_table_is_refused_with_every_problem(tmp_path: Path) -> None:
    from node.geo import GeographyError

    path = tmp_path / "pc4.csv"
    path.write_text("country,area,lat,lon\nNL,1012,52.37,4.89\nNL,1012,52.37,4.89\nDE,99,0,0\n")
    with pytest.raises(GeographyError) as err:
        load_pc4_centroids(path)
    text = " ".join(err.value.problems)
    assert "line 4" in text and "repeat a (country, area) pair" in text
    (tmp_path / "cols.csv").write_text("postcode,x\n")
    with pytest.raises(GeographyError, match="column 'country' is missing"):
        load_pc4_centroids(tmp_path / "cols.csv")


def test_synthetic_pc4_table_is_a_valid_centroid_table(tmp_path: Path) -> None:
    from synthetic.geography import pc4_table

    path = tmp_path / "pc4.csv"
    pc4_table().write_csv(path)
    table = load_pc4_centroids(path)
    assert table.height > 15_000 and set(table["country"]) == {"NL", "BE"}
