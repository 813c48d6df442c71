"""The node's configuration file (TOML), parsed once into a frozen value; all errors at once.

Relative paths are resolved against the folder of the configuration file, so a node folder can
be moved or backed up as a whole.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.ledger import BudgetCap, Period
from node.policy import Policy
from node.tls import TlsFiles
from privacy.budget import InvalidBudget, Rho
from protocols.messages import ReleaseMode
from protocols.vocabulary import INSTITUTION_TYPES

EXAMPLE = """\
# publiek node configuration. Paths are relative to this file.
institution_id = "inst-01"          # as in your certificate; agreed with the sector body
institution_type = "theatre"        # one of: {types}

[data]
tickets = "data/ticket_line.csv"    # canonical ticket_line export (see docs)
country = "NL"                      # assumed when a row has no country

[coordinator]
address = "coordinator.example.org:50051"
# server_name = "coordinator"       # only if the certificate names another host

[tls]                               # mutual TLS; issued by the sector CA
ca = "certs/ca.pem"
cert = "certs/node.pem"
key = "certs/node.key"
# insecure = true                   # plaintext, ONLY for a local demo; never with real data

[ledger]
path = "state/ledger.sqlite"        # back this file up: it is your record of every release

[budget]                            # your cap; no coordinator can raise it
rho_cap = "1.0"                     # zCDP rho per period (see docs/privacy-budget.md)
period = "year"                     # year | quarter | month | total
max_rho_per_task = "0.5"

[policy]
allowed_modes = ["open"]            # open: the coordinator sees your noisy answer
""".format(types=", ".join(INSTITUTION_TYPES))


class ConfigError(ValueError):
    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class NodeConfig:
    institution_id: str
    institution_type: str
    tickets: Path
    country: str
    address: str
    server_name: str | None
    tls: TlsFiles | None
    ledger_path: Path
    cap: BudgetCap
    policy: Policy


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
    tickets = path("data.tickets")
    country = (text("data.country", required=False, default="NL") or "NL").upper()
    address = text("coordinator.address") or ""
    server_name = text("coordinator.server_name", required=False)

    insecure = _get(raw, "tls.insecure") is True
    tls_paths = [path(f"tls.{k}", required=not insecure) for k in ("ca", "cert", "key")]
    if insecure and any(tls_paths):
        problems.append("tls.insecure = true conflicts with tls.ca/cert/key: choose one")
    tls = None
    ca, cert, key = tls_paths
    if not insecure and ca and cert and key:
        tls = TlsFiles(ca=ca, cert=cert, key=key)

    ledger_path = path("ledger.path") or base / "ledger.sqlite"
    period_text = text("budget.period", required=False, default="year") or "year"
    try:
        period = Period(period_text)
    except ValueError:
        problems.append(f"budget.period must be one of {', '.join(p.value for p in Period)}")
        period = Period.YEAR
    cap = BudgetCap(rho("budget.rho_cap", "1.0"), period)
    max_task = rho("budget.max_rho_per_task", "0.5")

    modes_raw = _get(raw, "policy.allowed_modes")
    modes = frozenset({ReleaseMode.OPEN})
    if modes_raw is not None:
        try:
            modes = frozenset(ReleaseMode(m) for m in modes_raw)
        except (ValueError, TypeError):
            problems.append('policy.allowed_modes must be a list of "open" and/or "secure"')
    stats_raw = _get(raw, "policy.allowed_statistics")
    stats = None
    if stats_raw is not None:
        if isinstance(stats_raw, list) and all(isinstance(s, str) for s in stats_raw):
            stats = frozenset(stats_raw)
        else:
            problems.append("policy.allowed_statistics must be a list of names such as 'S1'")

    if problems:
        raise ConfigError(source, problems)
    return NodeConfig(
        institution_id=institution_id,
        institution_type=institution_type,
        tickets=tickets or Path(),
        country=country,
        address=address,
        server_name=server_name,
        tls=tls,
        ledger_path=ledger_path,
        cap=cap,
        policy=Policy(max_rho_per_task=max_task, allowed_modes=modes, allowed_statistics=stats),
    )


def load_config(path: Path) -> NodeConfig:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(str(path), ["file not found"]) from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(str(path), [f"not valid TOML: {err}"]) from err
    return parse_config(raw, path.parent.resolve(), str(path))
