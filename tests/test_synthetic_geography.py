"""The synthetic map: postcode areas sit in the region the contract assigns them to."""

from __future__ import annotations

import numpy as np

from protocols.geography import REGION_CODES, postcode_ranges, region_of_area
from synthetic.geography import CITIES, area_centroid, layout, pc4_table, to_latlon, to_xy


def test_every_area_on_the_map_maps_back_to_its_region():
    table = pc4_table()
    mapped = [
        region_of_area(area, country)
        for area, country in zip(table["area"].to_list(), table["country"].to_list(), strict=True)
    ]
    assert mapped == table["region"].to_list()


def test_every_postcode_area_of_nl_and_be_is_on_the_map_once():
    table = pc4_table()
    for code in REGION_CODES:
        expected = sum(b - a + 1 for a, b in postcode_ranges(code))
        assert table.filter(table["region"] == code).height == expected, code
    assert table.select("country", "area").is_unique().all()


def test_cities_lie_in_their_own_region():
    lay = layout()
    x, y = to_xy([c.lat for c in CITIES], [c.lon for c in CITIES])
    cells = lay.cell_of(x, y)
    assert (cells >= 0).all()
    assert [REGION_CODES[r] for r in lay.cell_region[cells]] == [c.region for c in CITIES]


def test_area_centroids_are_near_where_people_of_that_area_live():
    lay = layout()
    rng = np.random.default_rng(1)
    # Random points on land, located, must be within a couple of cells of their area centroid.
    x = rng.uniform(-150, 150, 20_000)
    y = rng.uniform(-180, 150, 20_000)
    land = lay.is_land(x, y)
    region, area = lay.locate(x[land], y[land], rng)
    assert (lay.area_region[area] == region).all()
    gap = np.hypot(lay.area_x[area] - x[land], lay.area_y[area] - y[land])
    # Regions with fewer areas than cells spread an area over several cells.
    assert np.median(gap) < 5.0


def test_area_centroid_lookup_and_projection_round_trip():
    centroid = area_centroid(1012, "NL")  # central Amsterdam
    assert centroid is not None
    lat, lon = centroid
    assert abs(lat - 52.37) < 0.1
    assert abs(lon - 4.9) < 0.15
    assert area_centroid(1012, "DE") is None
    back_lat, back_lon = to_latlon(*to_xy(51.5, 4.25))
    assert abs(float(back_lat) - 51.5) < 1e-9
    assert abs(float(back_lon) - 4.25) < 1e-9
