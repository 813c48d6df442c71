"""Public household counts by region: the denominator of S8 (participation per 1,000 households).

Private households on 1 January 2024, in thousands, rounded:
- Dutch provinces: CBS StatLine, table 71486ned "Huishoudens; samenstelling, grootte, regio,
  1 januari" (particuliere huishoudens per provincie);
- Flemish provinces, Brussels and Wallonia: Statbel, "Huishoudens" (private huishoudens per
  provincie/gewest, 1 januari).

Neither ../shared/domain/README.md nor simulation.yaml holds household counts, and this machine
cannot reach those sites, so the figures were entered from the publishers' 2024 tables as
remembered to the nearest thousand (about 8.4 million Dutch and 5.0 million Belgian households):
they are the right order for every region, not the exact published numbers. Before a release
is published for real, replace them with the current table from CBS and Statbel (the release
names this table and its year, so a policymaker can check). Abroad and unknown have no
denominator and get no S8 value.
"""

from __future__ import annotations

from typing import Final

SOURCE: Final[str] = (
    "private households on 1 January 2024 (thousands, rounded): CBS StatLine 71486ned for Dutch"
    " provinces, Statbel 'Huishoudens' for Belgian provinces and regions; entered without online"
    " access, to be checked against the publishers' tables before a real publication"
)
YEAR: Final[int] = 2024

HOUSEHOLDS: Final[dict[str, int]] = {
    "NL-GR": 308_000,
    "NL-FR": 296_000,
    "NL-DR": 224_000,
    "NL-OV": 507_000,
    "NL-FL": 178_000,
    "NL-GE": 953_000,
    "NL-UT": 600_000,
    "NL-NH": 1_427_000,
    "NL-ZH": 1_770_000,
    "NL-ZE": 178_000,
    "NL-NB": 1_188_000,
    "NL-LI": 535_000,
    "BE-BRU": 555_000,
    "BE-VAN": 797_000,
    "BE-VLI": 373_000,
    "BE-VOV": 690_000,
    "BE-VBR": 488_000,
    "BE-VWV": 533_000,
    "BE-WAL": 1_614_000,
}
