"""A synthetic Dutch/Flemish cultural sector: institutions sharing one population of people.

`generate_sector(SectorConfig(...))` builds, deterministically from a seed, N institutions
(theatres, concert halls, poppodia, film houses, museums, festivals, Flemish cultural centres)
and one population of people who book at them, and returns a `Sector`: each institution's
ticketing export in the canonical `ticket_line` schema (`Sector.tickets`), its public metadata
(`Sector.institutions`) and the person-level ground truth (`Sector.truth`) that tests and
benchmarks compare federated, differentially private releases against. `Sector.write` puts it
all on disk and `load_sector` reads it back; `python -m synthetic generate ...` (the
`publiek-synth` command) does the same from a shell.

What is modelled, and where the numbers come from:

* Every number of `simulation.yaml` (a byte-identical copy of `../shared/domain/simulation.yaml`,
  read by `params.py`) is used as given: the institution type mix and ticket volumes (with the
  COVID index per year), the engagement tiers and their booking rates, the frequency pmf and
  year-on-year retention, cross-visiting shares, identity completeness, age bands by
  discipline, travel-distance medians, prices, price types, genre mix, lead times, channels and
  tickets per order. `realism.py` measures a generated sector against each of them.
* The vocabularies, columns, regions and postcode ranges come from `protocols/` (the contract).
* Modelling assumptions that are not in the YAML are named constants, with the reason, in the
  module that uses them: the eleven latent segments and their habits (`segments.py`), the
  discipline mixes of types other than the general theatre (`institutions.py`), the programme
  calendar (`performances.py`), price families and discounts (`pricing.py`), order statuses,
  walk-ins and lead-time spreads (`orders.py`), names, mail domains and postcode formats
  (`identity.py`), and the map of postcode areas (`geography.py`).
* A few free parameters of the behaviour model (`population.Calibration`) were fitted by
  simulation so that the frequency pmf, retention and cross-visiting land on the YAML targets.

The people: one shared population. Each person has a latent segment (11, in three engagement
tiers) that drives discipline taste, age, travel distance and habits; institutions recruit
their clientele around them at log-normal distances; people also use other institutions nearby
by a gravity model, so the same person appears, under different customer numbers, at several
institutions, identified across them only by their e-mail address.
"""

from synthetic.config import SectorConfig
from synthetic.institutions import Institution
from synthetic.io import load_sector
from synthetic.sector import Sector, generate_sector
from synthetic.truth import GroundTruth

__all__ = [
    "GroundTruth",
    "Institution",
    "Sector",
    "SectorConfig",
    "generate_sector",
    "load_sector",
]
