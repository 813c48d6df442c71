"""The node's configuration file (TOML), parsed once into a frozen value; all errors at once.

Relative paths are resolved against the folder of the configuration file, so a node folder can
be moved or backed up as a whole.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any, Final

from node.geo import Location
from node.ingest.pipeline import DEFAULT_MAX_BAD_SHARE
from node.ledger import BudgetCap, Period
from node.policy import Policy, PolicyError, parse_policy, read_policy_file
from node.tls import TlsFiles
from privacy.budget import InvalidBudget, Rho
from protocols.geography import REGION_CODES
from protocols.vocabulary import INSTITUTION_TYPES

EXAMPLE = """\
# publiek node configuration. Paths are relative to this file.
institution_id = "inst-01"          # as in your certificate; agreed with the sector body
institution_type = "theatre"        # one of: {types}
institution_region = "NL-NH"        # your own province, ISO 3166-2 (NL-UT, BE-VAN, ...;
                                    # BE-BRU for Brussels, BE-WAL for Wallonia)

[data]                              # see docs/node-data.md
tickets = "data/ticket_line.csv"    # your ticket export: CSV or Parquet
# format = "csv"                    # csv | parquet (default: from the file name)
# mapping = "mapping.toml"          # your columns and codes -> ticket_line (publiek-node init)
country = "NL"                      # assumed when a row has no country
max_bad_share = 0.01                # refuse the data when a larger share of rows has problems
# as_of = "2024-12-31"              # date features are measured at (default: last performance)

# Instead of `tickets`, a query on your ticketing database (SQLAlchemy URL; read-only account):
# [data.sql]
# url_env = "PUBLIEK_DB_URL"        # read the URL from this environment variable (keeps secrets
#                                   # out of this file), or: url = "postgresql+psycopg://..."
# query_file = "export.sql"        # the query, in a file of its own; or inline: query = "..."

[matching]
# key_file = "secrets/match.key"    # the HMAC key your sector's nodes share (never the
#                                   # coordinator): 64 hex characters, `openssl rand -hex 32`

[geography]                         # for distance bands (see docs/node-data.md)
# location = "52.3596, 4.8879"      # your main venue: latitude, longitude
# venues = {{ "zaal-2" = "52.37, 4.90" }}   # venues elsewhere, by venue_id
# pc4_centroids = "pc4_centroids.csv"     # country,area,lat,lon per postcode area; without
#                                   # it distances are measured between province centroids

[coordinator]
address = "coordinator.example.org:50051"
# server_name = "coordinator"       # only if the certificate names another host

[tls]                               # mutual TLS; issued by the sector CA
ca = "certs/ca.pem"
cert = "certs/node.pem"
key = "certs/node.key"
# crl = "certs/crl.pem"             # the sector CA's revocation list, when it publishes one
# insecure = true                   # plaintext, ONLY for a local demo; never with real data

[ledger]
path = "state/ledger.sqlite"        # back this file up: it is your record of every release

[budget]                            # your cap; no coordinator can raise it
rho_cap = "1.0"                     # zCDP rho per period (see docs/privacy-budget.md)
period = "year"                     # year | quarter | month | total

[policy]                            # what you are willing to answer; checked before any charge.
                                    # Or keep it in a file of its own: file = "policy.toml"
allowed_modes = ["secure"]          # secure: the coordinator only ever sees sums over
                                    # institutions; add "open" to let it see your own noisy
                                    # answer (per-institution benchmarking, tiny federations)
max_rho_per_task = "0.5"            # the most one task may cost
# max_rho_per_run = "0.6"           # the most all tasks of one run together may cost
# allowed_statistics = ["S1", "S2", "S3", "S4", "S5", "S6"]
# allowed_measures = ["tickets", "visits", "orders", "bookers", "revenue_cents"]
# min_n_min = 2                     # secure: only in sums of at least this many institutions
# max_cells = 100000                # the largest table
# max_contribution = {{ tickets = 256, revenue_cents = 100000 }}   # per customer and table
# allow_social_tariff = false       # true: also release tables that break out the social
#                                   # tariff (it can reveal poverty)
""".format(types=", ".join(INSTITUTION_TYPES))


def starter_config(tickets: str, mapping: str) -> str:
    """The example configuration pointed at an export and its mapping (for ``init``)."""
    text = EXAMPLE.replace(
        'tickets = "data/ticket_line.csv"    # your ticket export: CSV or Parquet',
        f"tickets = {_toml_str(tickets)}    # your ticket export: CSV or Parquet",
    )
    return text.replace(
        '# mapping = "mapping.toml"          # your columns and codes -> ticket_line'
        " (publiek-node init)",
        f"mapping = {_toml_str(mapping)}    # your columns and codes -> ticket_line",
    )


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ConfigError(ValueError):
    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


_ENROL: Final[str] = "docs/runbook.md §2, Enrol a node"


def missing_tls_files(tls: TlsFiles) -> list[str]:
    """The configured TLS files that do not exist yet, each with where it comes from.

    Right after ``init`` none of them exists; "not a readable PEM certificate" would send the
    operator looking inside a file that is simply not there.
    """
    where = {
        "ca": (
            tls.ca,
            "get ca.pem, the sector CA certificate, from the sector body; it sends it back with"
            " your signed certificate",
        ),
        "cert": (
            tls.cert,
            "this node's certificate comes from the sector body, which signs the request"
            " `publiek-node init --institution-id ID` makes",
        ),
        "key": (
            tls.key,
            "`publiek-node init --institution-id ID` makes this node's private key, with the"
            " certificate request",
        ),
    }
    return [
        f"tls.{name}: {path} does not exist: {what} ({_ENROL})"
        for name, (path, what) in where.items()
        if not path.exists()
    ]


@dataclass(frozen=True, slots=True)
class SqlConfig:
    url: str = field(repr=False)  # may hold a password: never logged (see sources.redact_url)
    query: str


@dataclass(frozen=True, slots=True)
class DataConfig:
    tickets: Path | None  # a file, or None when the data comes from SQL
    sql: SqlConfig | None
    format: str | None  # "csv" | "parquet" | None (from the file name)
    mapping: Path | None
    country: str
    max_bad_share: float
    as_of: date | None


@dataclass(frozen=True, slots=True)
class GeographyConfig:
    location: Location | None = None
    venues: tuple[tuple[str, Location], ...] = ()
    pc4_centroids: Path | None = None


@dataclass(frozen=True, slots=True)
class NodeConfig:
    institution_id: str
    institution_type: str
    data: DataConfig
    address: str
    server_name: str | None
    tls: TlsFiles | None
    ledger_path: Path
    cap: BudgetCap
    policy: Policy
    match_key_file: Path | None = None
    geography: GeographyConfig = field(default_factory=GeographyConfig)
    # The institution's own region (a key of protocols.geography), for institution_region.
    institution_region: str = "UNKNOWN"

    @property
    def tickets(self) -> Path | None:
        return self.data.tickets

    @property
    def country(self) -> str:
        return self.data.country


def _get(table: dict[str, Any], dotted: str) -> Any:
    cur: Any = table
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def parse_config(raw: dict[str, Any], base: Path, source: str = "node config") -> NodeConfig:
    problems: list[str] = []

    def text(key: str, required: bool = True, default: str | None = None) -> str | None:
        value = _get(raw, key)
        if value is None:
            if required and default is None:
                problems.append(f"{key} is missing")
            return default
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{key} must be a non-empty string")
            return default
        return value.strip()

    def path(key: str, required: bool = True) -> Path | None:
        value = text(key, required)
        return (base / value).resolve() if value else None

    def rho(key: str, default: str) -> Rho:
        value = text(key, required=False, default=default) or default
        try:
            return Rho.parse(value)
        except InvalidBudget as err:
            problems.append(f"{key}: {err}")
            return Rho.parse(default)

    institution_id = text("institution_id") or ""
    institution_type = text("institution_type") or ""
    if institution_type and institution_type not in INSTITUTION_TYPES:
        problems.append(
            f"institution_type {institution_type!r} is not one of {', '.join(INSTITUTION_TYPES)}"
        )
    data = _data_section(raw, base, problems, text, path)
    match_key_file = path("matching.key_file", required=False)
    geography = _geography_section(raw, base, problems)
    address = text("coordinator.address") or ""
    server_name = text("coordinator.server_name", required=False)

    insecure = _get(raw, "tls.insecure") is True
    tls_paths = [path(f"tls.{k}", required=not insecure) for k in ("ca", "cert", "key")]
    crl = path("tls.crl", required=False)
    if insecure and (any(tls_paths) or crl):
        problems.append("tls.insecure = true conflicts with tls.ca/cert/key/crl: choose one")
    tls = None
    ca, cert, key = tls_paths
    if not insecure and ca and cert and key:
        tls = TlsFiles(ca=ca, cert=cert, key=key, crl=crl)

    ledger_path = path("ledger.path") or base / "ledger.sqlite"
    period_text = text("budget.period", required=False, default="year") or "year"
    try:
        period = Period(period_text)
    except ValueError:
        problems.append(f"budget.period must be one of {', '.join(p.value for p in Period)}")
        period = Period.YEAR
    cap = BudgetCap(rho("budget.rho_cap", "1.0"), period)
    max_task = rho("budget.max_rho_per_task", "0.5")

    policy = _policy_section(raw, base, problems, _get(raw, "budget.max_rho_per_task"), max_task)
    institution_region = text("institution_region", required=False, default="UNKNOWN") or ""
    if institution_region not in REGION_CODES:
        problems.append(
            f"institution_region {institution_region!r} is not one of {', '.join(REGION_CODES)}"
        )

    if problems:
        raise ConfigError(source, problems)
    return NodeConfig(
        institution_id=institution_id,
        institution_type=institution_type,
        data=data,
        address=address,
        server_name=server_name,
        tls=tls,
        ledger_path=ledger_path,
        cap=cap,
        policy=policy,
        institution_region=institution_region,
        match_key_file=match_key_file,
        geography=geography,
    )


def _policy_section(
    raw: dict[str, Any],
    base: Path,
    problems: list[str],
    legacy_task_cap: Any,
    legacy_value: Rho,
) -> Policy:
    """``[policy]`` inline, or ``[policy] file = "policy.toml"``; every problem reported."""
    table = _get(raw, "policy")
    if table is None:
        table = {}
    if not isinstance(table, dict):
        problems.append("[policy] must be a table")
        return Policy()
    fields: dict[str, Any] = table
    where = "policy."
    if "file" in table:
        inline = sorted(k for k in table if k != "file")
        if inline:
            problems.append(
                f"[policy] names a file and also sets {', '.join(inline)}: keep the policy in"
                " one place"
            )
        name = table["file"]
        if not isinstance(name, str) or not name.strip():
            problems.append('policy.file must be a file name such as "policy.toml"')
            return Policy()
        path = (base / name.strip()).resolve()
        try:
            fields = read_policy_file(path)
        except PolicyError as err:
            problems.extend(err.problems)
            return Policy()
        where = f"{path}: "
    try:
        policy = parse_policy(fields, where)
    except PolicyError as err:
        problems.extend(err.problems)
        policy = Policy()
    if legacy_task_cap is not None:
        # The older place of this cap ([budget]) still works; two places would be ambiguous.
        if "max_rho_per_task" in fields:
            problems.append(
                "max_rho_per_task is set both in [budget] and in the policy: keep the policy's"
            )
        else:
            policy = replace(policy, max_rho_per_task=legacy_value)
    return policy


def _data_section(
    raw: dict[str, Any],
    base: Path,
    problems: list[str],
    text: Callable[..., str | None],
    path: Callable[..., Path | None],
) -> DataConfig:
    sql_raw = _get(raw, "data.sql")
    sql: SqlConfig | None = None
    tickets = path("data.tickets", required=sql_raw is None)
    if sql_raw is not None:
        if tickets is not None:
            problems.append("data.tickets and [data.sql] both given: choose a file or a query")
        sql = _sql_section(sql_raw, base, problems)
    fmt = text("data.format", required=False)
    if fmt is not None and fmt not in ("csv", "parquet"):
        problems.append('data.format must be "csv" or "parquet"')
        fmt = None
    country = (text("data.country", required=False, default="NL") or "NL").upper()
    if len(country) != 2 or not country.isalpha():
        problems.append(f"data.country must be a 2-letter country code, got {country!r}")
    share_raw = _get(raw, "data.max_bad_share")
    max_bad_share = DEFAULT_MAX_BAD_SHARE
    if share_raw is not None:
        if isinstance(share_raw, int | float) and not isinstance(share_raw, bool):
            max_bad_share = float(share_raw)
        if not (isinstance(share_raw, int | float) and 0.0 <= float(share_raw) <= 1.0):
            problems.append("data.max_bad_share must be a number from 0 to 1 (0.01 is 1%)")
    as_of_raw = _get(raw, "data.as_of")
    as_of: date | None = None
    if isinstance(as_of_raw, date):
        as_of = as_of_raw
    elif isinstance(as_of_raw, str):
        try:
            as_of = date.fromisoformat(as_of_raw)
        except ValueError:
            problems.append(f"data.as_of must be a date like 2024-12-31, got {as_of_raw!r}")
    elif as_of_raw is not None:
        problems.append("data.as_of must be a date like 2024-12-31")
    return DataConfig(
        tickets=tickets,
        sql=sql,
        format=fmt,
        mapping=path("data.mapping", required=False),
        country=country,
        max_bad_share=max_bad_share,
        as_of=as_of,
    )


def _sql_section(sql_raw: Any, base: Path, problems: list[str]) -> SqlConfig | None:
    if not isinstance(sql_raw, dict):
        problems.append("[data.sql] must be a table with url (or url_env) and query")
        return None
    url = sql_raw.get("url")
    url_env = sql_raw.get("url_env")
    if (url is None) == (url_env is None):
        problems.append("[data.sql] needs exactly one of url and url_env")
    elif url_env is not None:
        if not isinstance(url_env, str) or not url_env:
            problems.append("[data.sql] url_env must name an environment variable")
            url = None
        else:
            url = os.environ.get(url_env)
            if not url:
                problems.append(f"[data.sql] environment variable {url_env} is not set")
    if url is not None and (not isinstance(url, str) or "://" not in url):
        problems.append("[data.sql] url must be a database URL such as postgresql+psycopg://...")
        url = None
    query = sql_raw.get("query")
    query_file = sql_raw.get("query_file")
    if (query is None) == (query_file is None):
        problems.append("[data.sql] needs exactly one of query and query_file")
    elif query_file is not None:
        try:
            query = (base / str(query_file)).read_text(encoding="utf-8")
        except OSError as err:
            problems.append(f"[data.sql] query_file cannot be read: {err.strerror or err}")
            query = None
    if query is not None and (not isinstance(query, str) or not query.strip()):
        problems.append("[data.sql] query must be a non-empty SQL text")
        query = None
    if isinstance(url, str) and isinstance(query, str):
        return SqlConfig(url=url, query=query)
    return None


def _geography_section(raw: dict[str, Any], base: Path, problems: list[str]) -> GeographyConfig:
    geo = _get(raw, "geography") or {}
    if not isinstance(geo, dict):
        problems.append("[geography] must be a table")
        return GeographyConfig()
    location: Location | None = None
    if "location" in geo:
        try:
            location = Location.parse(str(geo["location"]))
        except ValueError as err:
            problems.append(f"geography.location: {err}")
    venues: list[tuple[str, Location]] = []
    venues_raw = geo.get("venues", {})
    if not isinstance(venues_raw, dict):
        problems.append('geography.venues must be a table such as { "zaal-2" = "52.37, 4.90" }')
        venues_raw = {}
    for venue, where in venues_raw.items():
        try:
            venues.append((str(venue), Location.parse(str(where))))
        except ValueError as err:
            problems.append(f"geography.venues.{venue}: {err}")
    pc4 = geo.get("pc4_centroids")
    pc4_path: Path | None = None
    if pc4 is not None:
        if isinstance(pc4, str) and pc4.strip():
            pc4_path = (base / pc4.strip()).resolve()
        else:
            problems.append("geography.pc4_centroids must be a file name")
    return GeographyConfig(location=location, venues=tuple(venues), pc4_centroids=pc4_path)


def load_config(path: Path) -> NodeConfig:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(str(path), ["file not found"]) from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(str(path), [f"not valid TOML: {err}"]) from err
    return parse_config(raw, path.parent.resolve(), str(path))
