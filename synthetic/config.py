"""`SectorConfig`: the few public knobs of a synthetic sector, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

MAX_INSTITUTIONS: Final[int] = 2000
MIN_YEAR: Final[int] = 1990
MAX_YEAR: Final[int] = 2100
MAX_YEARS_SPANNED: Final[int] = 20
MAX_SCALE: Final[float] = 10.0


@dataclass(frozen=True, slots=True)
class SectorConfig:
    """What to generate. The same config always gives the same sector, byte for byte.

    n_institutions: how many institutions (nodes) the sector has.
    seed: the seed of every random draw (a non-negative integer).
    years: first and last calendar year of performances, inclusive.
    scale: multiplies ticket volumes, performances and the population; 1.0 is realistic size,
        0.02 a tiny sector for fast tests.
    """

    n_institutions: int = 12
    seed: int = 0
    years: tuple[int, int] = (2023, 2024)
    scale: float = 1.0

    def __post_init__(self) -> None:
        _check_int("n_institutions", self.n_institutions, 1, MAX_INSTITUTIONS)
        _check_int("seed", self.seed, 0, 2**63 - 1)
        years: Any = self.years
        if not isinstance(years, tuple | list) or len(years) != 2:
            raise ValueError(f"years must be a pair (first, last), got {years!r}")
        first, last = years
        _check_int("first year", first, MIN_YEAR, MAX_YEAR)
        _check_int("last year", last, MIN_YEAR, MAX_YEAR)
        if last < first:
            raise ValueError(f"years: last year {last} is before first year {first}")
        if last - first + 1 > MAX_YEARS_SPANNED:
            raise ValueError(f"years: at most {MAX_YEARS_SPANNED} years, got {last - first + 1}")
        # Accept a list (e.g. from JSON) but store the tuple the type promises.
        object.__setattr__(self, "years", (int(first), int(last)))
        scale: Any = self.scale
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            raise ValueError(f"scale must be a number, got {scale!r}")
        if not 0.0 < float(scale) <= MAX_SCALE:
            raise ValueError(f"scale must be in (0, {MAX_SCALE}], got {scale}")
        object.__setattr__(self, "scale", float(scale))

    @property
    def year_list(self) -> tuple[int, ...]:
        return tuple(range(self.years[0], self.years[1] + 1))

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_institutions": self.n_institutions,
            "seed": self.seed,
            "years": list(self.years),
            "scale": self.scale,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SectorConfig:
        try:
            return cls(
                n_institutions=data["n_institutions"],
                seed=data["seed"],
                years=tuple(data["years"]),
                scale=data["scale"],
            )
        except KeyError as exc:
            raise ValueError(f"sector config is missing {exc.args[0]!r}") from exc


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    # bool is an int subclass; True institutions is a bug, not a count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
