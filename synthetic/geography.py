"""A synthetic map of the Netherlands and Flanders: cities, regions and 4-digit postcode areas.

We have no postcode polygons here, so the generator uses a stand-in that is consistent with the
public contract in `protocols.geography`:

* Space is a flat plane in kilometres (an equirectangular projection around 52N 5E; the error is
  a few percent over the area, far below the spread of travel distances).
* The plane is cut into 2 km cells. A cell belongs to the region of its nearest *seed* (the real
  cities below and the region centroids of `protocols.geography.REGIONS`), so region borders are
  Voronoi borders between real places. Cells farther than `LAND_RADIUS_KM` from every seed are
  not land: nobody lives there.
* The postcode areas of a region (`protocols.geography.postcode_ranges`) are laid over its cells
  in rank order of distance from the region's largest city, so low numbers sit in the centre
  (as Amsterdam's 10xx do) and numerically close areas are spatial neighbours. Each area gets a
  centroid, so a node can turn a synthetic postcode back into an approximate location.

By construction `region_of_area(area, country)` of every area placed in a region returns that
region, which is what the node's geography needs. The layout uses no randomness: it is the same
map for every seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl

from protocols.geography import REGION_CODES, REGIONS, postcode_ranges

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Projection origin and scale (km per degree).
_LAT0: Final[float] = 52.0
_LON0: Final[float] = 5.0
_KM_PER_DEG_LAT: Final[float] = 110.57
_KM_PER_DEG_LON: Final[float] = 111.32 * math.cos(math.radians(_LAT0))

# The mapped rectangle covers the Netherlands, Flanders, Brussels and northern Wallonia.
_LAT_MIN, _LAT_MAX = 49.9, 53.8
_LON_MIN, _LON_MAX = 2.3, 7.5
CELL_KM: Final[float] = 2.0
LAND_RADIUS_KM: Final[float] = 30.0


@dataclass(frozen=True, slots=True)
class City:
    name: str
    region: str
    lat: float
    lon: float
    population_k: int  # inhabitants in thousands (rounded, municipality)


# Real places (approximate centres, rounded populations). They seed the region map, host the
# synthetic institutions (BE-WAL only hosts residents: the sector is Dutch and Flemish) and give
# the "city" of the cross-visiting statistics a meaning.
CITIES: Final[tuple[City, ...]] = (
    City("Amsterdam", "NL-NH", 52.370, 4.895, 930),
    City("Haarlem", "NL-NH", 52.381, 4.636, 165),
    City("Zaandam", "NL-NH", 52.438, 4.826, 160),
    City("Alkmaar", "NL-NH", 52.632, 4.748, 110),
    City("Hilversum", "NL-NH", 52.223, 5.176, 92),
    City("Hoorn", "NL-NH", 52.642, 5.060, 74),
    City("Den Helder", "NL-NH", 52.956, 4.760, 56),
    City("Rotterdam", "NL-ZH", 51.924, 4.478, 670),
    City("Den Haag", "NL-ZH", 52.078, 4.288, 560),
    City("Leiden", "NL-ZH", 52.160, 4.497, 130),
    City("Zoetermeer", "NL-ZH", 52.057, 4.493, 127),
    City("Dordrecht", "NL-ZH", 51.813, 4.690, 120),
    City("Delft", "NL-ZH", 52.012, 4.357, 105),
    City("Gouda", "NL-ZH", 52.012, 4.711, 75),
    City("Utrecht", "NL-UT", 52.091, 5.122, 370),
    City("Amersfoort", "NL-UT", 52.156, 5.388, 160),
    City("Veenendaal", "NL-UT", 52.028, 5.558, 68),
    City("Nieuwegein", "NL-UT", 52.029, 5.081, 64),
    City("Eindhoven", "NL-NB", 51.441, 5.470, 240),
    City("Tilburg", "NL-NB", 51.560, 5.091, 225),
    City("Breda", "NL-NB", 51.589, 4.776, 185),
    City("'s-Hertogenbosch", "NL-NB", 51.697, 5.304, 160),
    City("Helmond", "NL-NB", 51.476, 5.661, 95),
    City("Oss", "NL-NB", 51.765, 5.518, 95),
    City("Bergen op Zoom", "NL-NB", 51.495, 4.291, 68),
    City("Nijmegen", "NL-GE", 51.842, 5.853, 180),
    City("Arnhem", "NL-GE", 51.985, 5.899, 165),
    City("Apeldoorn", "NL-GE", 52.211, 5.969, 165),
    City("Ede", "NL-GE", 52.040, 5.665, 120),
    City("Doetinchem", "NL-GE", 51.965, 6.289, 58),
    City("Zutphen", "NL-GE", 52.138, 6.201, 48),
    City("Harderwijk", "NL-GE", 52.342, 5.620, 48),
    City("Tiel", "NL-GE", 51.886, 5.429, 42),
    City("Enschede", "NL-OV", 52.221, 6.894, 160),
    City("Zwolle", "NL-OV", 52.517, 6.083, 130),
    City("Deventer", "NL-OV", 52.255, 6.163, 100),
    City("Hengelo", "NL-OV", 52.266, 6.793, 81),
    City("Almelo", "NL-OV", 52.357, 6.662, 73),
    City("Maastricht", "NL-LI", 50.851, 5.691, 120),
    City("Venlo", "NL-LI", 51.370, 6.172, 102),
    City("Sittard-Geleen", "NL-LI", 51.000, 5.869, 92),
    City("Heerlen", "NL-LI", 50.888, 5.979, 87),
    City("Roermond", "NL-LI", 51.194, 5.987, 59),
    City("Groningen", "NL-GR", 53.219, 6.567, 235),
    City("Veendam", "NL-GR", 53.107, 6.876, 28),
    City("Stadskanaal", "NL-GR", 52.990, 6.950, 32),
    City("Delfzijl", "NL-GR", 53.330, 6.918, 25),
    City("Leeuwarden", "NL-FR", 53.201, 5.799, 125),
    City("Heerenveen", "NL-FR", 52.960, 5.920, 51),
    City("Drachten", "NL-FR", 53.105, 6.099, 45),
    City("Sneek", "NL-FR", 53.033, 5.659, 34),
    City("Emmen", "NL-DR", 52.785, 6.897, 107),
    City("Assen", "NL-DR", 52.993, 6.562, 69),
    City("Hoogeveen", "NL-DR", 52.722, 6.476, 56),
    City("Meppel", "NL-DR", 52.696, 6.194, 34),
    City("Almere", "NL-FL", 52.371, 5.222, 220),
    City("Lelystad", "NL-FL", 52.518, 5.471, 80),
    City("Emmeloord", "NL-FL", 52.711, 5.749, 27),
    City("Terneuzen", "NL-ZE", 51.336, 3.828, 55),
    City("Middelburg", "NL-ZE", 51.499, 3.611, 49),
    City("Vlissingen", "NL-ZE", 51.443, 3.573, 45),
    City("Goes", "NL-ZE", 51.504, 3.891, 38),
    City("Brussel", "BE-BRU", 50.847, 4.357, 1240),
    City("Antwerpen", "BE-VAN", 51.219, 4.402, 530),
    City("Mechelen", "BE-VAN", 51.026, 4.478, 87),
    City("Turnhout", "BE-VAN", 51.323, 4.944, 46),
    City("Geel", "BE-VAN", 51.162, 4.990, 41),
    City("Lier", "BE-VAN", 51.131, 4.570, 37),
    City("Gent", "BE-VOV", 51.054, 3.722, 265),
    City("Aalst", "BE-VOV", 50.938, 4.039, 89),
    City("Sint-Niklaas", "BE-VOV", 51.165, 4.143, 80),
    City("Dendermonde", "BE-VOV", 51.028, 4.101, 46),
    City("Oudenaarde", "BE-VOV", 50.845, 3.605, 32),
    City("Brugge", "BE-VWV", 51.209, 3.225, 119),
    City("Kortrijk", "BE-VWV", 50.828, 3.265, 78),
    City("Oostende", "BE-VWV", 51.216, 2.928, 72),
    City("Roeselare", "BE-VWV", 50.946, 3.123, 64),
    City("Ieper", "BE-VWV", 50.851, 2.886, 35),
    City("Leuven", "BE-VBR", 50.880, 4.701, 102),
    City("Vilvoorde", "BE-VBR", 50.928, 4.429, 45),
    City("Halle", "BE-VBR", 50.734, 4.234, 40),
    City("Tienen", "BE-VBR", 50.808, 4.938, 35),
    City("Aarschot", "BE-VBR", 50.985, 4.837, 30),
    City("Hasselt", "BE-VLI", 50.931, 5.338, 79),
    City("Genk", "BE-VLI", 50.965, 5.500, 66),
    City("Lommel", "BE-VLI", 51.230, 5.313, 35),
    City("Sint-Truiden", "BE-VLI", 50.816, 5.186, 41),
    City("Tongeren", "BE-VLI", 50.781, 5.464, 31),
    City("Charleroi", "BE-WAL", 50.411, 4.444, 201),
    City("Liège", "BE-WAL", 50.633, 5.567, 197),
    City("Namur", "BE-WAL", 50.467, 4.872, 112),
    City("Mons", "BE-WAL", 50.454, 3.952, 95),
    City("Tournai", "BE-WAL", 50.606, 3.388, 69),
    City("Wavre", "BE-WAL", 50.717, 4.601, 34),
)

# Rough population of each region in millions (CBS / Statbel, 2023), for placing institutions.
REGION_POPULATION_M: Final[dict[str, float]] = {
    "NL-GR": 0.59,
    "NL-FR": 0.66,
    "NL-DR": 0.50,
    "NL-OV": 1.18,
    "NL-FL": 0.44,
    "NL-GE": 2.13,
    "NL-UT": 1.39,
    "NL-NH": 2.95,
    "NL-ZH": 3.80,
    "NL-ZE": 0.39,
    "NL-NB": 2.64,
    "NL-LI": 1.12,
    "BE-BRU": 1.24,
    "BE-VAN": 1.90,
    "BE-VLI": 0.89,
    "BE-VOV": 1.55,
    "BE-VBR": 1.17,
    "BE-VWV": 1.21,
    "BE-WAL": 3.68,
}

REGION_INDEX: Final[dict[str, int]] = {code: i for i, code in enumerate(REGION_CODES)}
COUNTRY_OF_REGION: Final[dict[str, str]] = {r.code: r.country for r in REGIONS}


def to_xy(lat: npt.ArrayLike, lon: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Project degrees onto the plane of the map (km east and north of 52N 5E)."""
    x = (np.asarray(lon, dtype=np.float64) - _LON0) * _KM_PER_DEG_LON
    y = (np.asarray(lat, dtype=np.float64) - _LAT0) * _KM_PER_DEG_LAT
    return x, y


def to_latlon(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Inverse of `to_xy`: (lat, lon) in degrees."""
    lat = np.asarray(y, dtype=np.float64) / _KM_PER_DEG_LAT + _LAT0
    lon = np.asarray(x, dtype=np.float64) / _KM_PER_DEG_LON + _LON0
    return lat, lon


@dataclass(frozen=True, slots=True)
class Layout:
    """The cell grid and the postcode areas laid over it (see the module docstring)."""

    x0: float
    y0: float
    nx: int
    ny: int
    cell_region: IntArray  # region index per cell (into REGION_CODES), -1 where no land
    cell_area_start: IntArray  # first area (index into the area arrays) of each cell
    cell_area_count: IntArray  # how many areas share the cell (0 where no land)
    area_code: IntArray  # 4-digit postcode area
    area_region: IntArray  # region index of the area
    area_x: FloatArray  # centroid of the area on the plane
    area_y: FloatArray

    def cell_of(self, x: FloatArray, y: FloatArray) -> IntArray:
        """Cell index of each point, -1 outside the mapped rectangle."""
        ix = np.floor((x - self.x0) / CELL_KM).astype(np.int64)
        iy = np.floor((y - self.y0) / CELL_KM).astype(np.int64)
        inside = (ix >= 0) & (ix < self.nx) & (iy >= 0) & (iy < self.ny)
        return np.where(inside, iy * self.nx + ix, -1)

    def is_land(self, x: FloatArray, y: FloatArray) -> npt.NDArray[np.bool_]:
        cell = self.cell_of(x, y)
        ok = cell >= 0
        land = np.zeros(len(cell), dtype=np.bool_)
        land[ok] = self.cell_region[cell[ok]] >= 0
        return land

    def locate(
        self, x: FloatArray, y: FloatArray, rng: np.random.Generator
    ) -> tuple[IntArray, IntArray]:
        """(region index, area index) of points on land; a cell holding several areas picks one.

        Points must be on land (see `is_land`).
        """
        cell = self.cell_of(x, y)
        if np.any(cell < 0) or np.any(self.cell_region[cell] < 0):
            raise ValueError("locate() needs points on land")
        count = self.cell_area_count[cell]
        pick = np.floor(rng.random(len(cell)) * count).astype(np.int64)
        area = self.cell_area_start[cell] + np.minimum(pick, count - 1)
        return self.area_region[area], area


def _seeds() -> tuple[FloatArray, FloatArray, IntArray]:
    lats = [c.lat for c in CITIES]
    lons = [c.lon for c in CITIES]
    regions = [REGION_INDEX[c.region] for c in CITIES]
    for region in REGIONS:
        if region.country:
            lats.append(region.lat)
            lons.append(region.lon)
            regions.append(REGION_INDEX[region.code])
    x, y = to_xy(lats, lons)
    return x, y, np.asarray(regions, dtype=np.int64)


@lru_cache(maxsize=1)
def layout() -> Layout:
    """The map (built once per process; it is deterministic and independent of any seed)."""
    x_min, y_min = to_xy(_LAT_MIN, _LON_MIN)
    x_max, y_max = to_xy(_LAT_MAX, _LON_MAX)
    x0, y0 = float(x_min), float(y_min)
    nx = math.ceil((float(x_max) - x0) / CELL_KM)
    ny = math.ceil((float(y_max) - y0) / CELL_KM)
    iy, ix = np.divmod(np.arange(nx * ny, dtype=np.int64), nx)
    cx = x0 + (ix + 0.5) * CELL_KM
    cy = y0 + (iy + 0.5) * CELL_KM

    sx, sy, sregion = _seeds()
    d2 = (cx[:, None] - sx[None, :]) ** 2 + (cy[:, None] - sy[None, :]) ** 2
    nearest = np.argmin(d2, axis=1)
    land = d2[np.arange(len(cx)), nearest] <= LAND_RADIUS_KM**2
    cell_region = np.where(land, sregion[nearest], -1)

    cell_area_start = np.zeros(nx * ny, dtype=np.int64)
    cell_area_count = np.zeros(nx * ny, dtype=np.int64)
    codes: list[IntArray] = []
    area_regions: list[IntArray] = []
    area_x: list[FloatArray] = []
    area_y: list[FloatArray] = []
    offset = 0
    for region in REGIONS:
        ranges = postcode_ranges(region.code)
        if not ranges:
            continue
        r = REGION_INDEX[region.code]
        cells = np.flatnonzero(cell_region == r)
        if len(cells) == 0:  # pragma: no cover - every region has a seed, hence cells
            raise RuntimeError(f"region {region.code} has no land on the synthetic map")
        capital = max((c for c in CITIES if c.region == region.code), key=lambda c: c.population_k)
        kx, ky = to_xy(capital.lat, capital.lon)
        order = np.lexsort((cells, (cx[cells] - kx) ** 2 + (cy[cells] - ky) ** 2))
        cells = cells[order]
        areas = np.concatenate([np.arange(a, b + 1, dtype=np.int64) for a, b in ranges])
        n_a, n_c = len(areas), len(cells)
        rank = np.arange(n_c, dtype=np.int64)
        lo = rank * n_a // n_c
        hi = np.maximum(lo + 1, (rank + 1) * n_a // n_c)
        cell_area_start[cells] = offset + lo
        cell_area_count[cells] = hi - lo
        # An area's centroid is the mean centre of the cells that hold it.
        owner = np.repeat(cells, hi - lo)
        member = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi, strict=True)])
        weight = np.bincount(member, minlength=n_a).astype(np.float64)
        ax = np.bincount(member, weights=cx[owner], minlength=n_a)
        ay = np.bincount(member, weights=cy[owner], minlength=n_a)
        codes.append(areas)
        area_regions.append(np.full(n_a, r, dtype=np.int64))
        area_x.append(ax / weight)
        area_y.append(ay / weight)
        offset += n_a

    return Layout(
        x0=x0,
        y0=y0,
        nx=nx,
        ny=ny,
        cell_region=cell_region.astype(np.int64),
        cell_area_start=cell_area_start,
        cell_area_count=cell_area_count,
        area_code=np.concatenate(codes),
        area_region=np.concatenate(area_regions),
        area_x=np.concatenate(area_x),
        area_y=np.concatenate(area_y),
    )


def pc4_table() -> pl.DataFrame:
    """Every synthetic postcode area: country, area, region and centroid (lat, lon).

    This is the synthetic stand-in for a public postcode-centroid table (CBS/PDOK): with it a
    node can compute travel distances from a postcode area without knowing anyone's address.
    """
    lay = layout()
    lat, lon = to_latlon(lay.area_x, lay.area_y)
    region = np.asarray(REGION_CODES, dtype=object)[lay.area_region]
    return pl.DataFrame(
        {
            "country": [COUNTRY_OF_REGION[str(r)] for r in region],
            "area": lay.area_code,
            "region": region.astype(str),
            "lat": np.round(lat, 5),
            "lon": np.round(lon, 5),
        }
    )


def area_centroid(area: int, country: str) -> tuple[float, float] | None:
    """(lat, lon) of a synthetic postcode area, or None when the map has no such area."""
    lay = layout()
    country_of_area = _area_country()
    hit = np.flatnonzero((lay.area_code == area) & (country_of_area == country))
    if len(hit) == 0:
        return None
    lat, lon = to_latlon(lay.area_x[hit[0]], lay.area_y[hit[0]])
    return float(lat), float(lon)


@lru_cache(maxsize=1)
def _area_country() -> npt.NDArray[np.str_]:
    lay = layout()
    countries = np.asarray([COUNTRY_OF_REGION[code] for code in REGION_CODES])
    return countries[lay.area_region]


def distance_km(x1: FloatArray, y1: FloatArray, x2: FloatArray, y2: FloatArray) -> FloatArray:
    """Straight-line distance on the map's plane."""
    return np.asarray(np.hypot(x1 - x2, y1 - y2), dtype=np.float64)
