"""Identity fields: e-mail addresses, full postcodes, customer accounts and what each account holds.

These are the columns the privacy tests look for on the wire, so they look real: a person has
one e-mail address (or none) used at every institution, stored with the occasional case
variation; a full postcode consistent with their home region (Dutch "1234 AB"/"1234AB", Belgian
"2000"); an institution-specific customer number per account.

From simulation.yaml (`identity`): how often an account holds an e-mail address by channel, how
often the birth year is missing, and the share of people with two accounts at one institution.
The YAML gives ranges; each institution draws its own rate inside them (data quality differs).
Assumptions of this module: the names and mail domains, the share of people without any e-mail
address, postcode completeness and formatting, and how a duplicate account differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl

from protocols.vocabulary import CHANNELS
from synthetic.geography import layout
from synthetic.institutions import InstitutionPlan
from synthetic.orders import Orders
from synthetic.params import SimulationParams
from synthetic.population import Population

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

FIRST_NAMES: Final[tuple[str, ...]] = (
    "anna", "emma", "sophie", "julia", "lotte", "sanne", "fleur", "eva", "lisa", "anouk",
    "marieke", "ingrid", "els", "annelies", "marleen", "karin", "monique", "petra", "linda",
    "hanna", "noor", "femke", "ilse", "inge", "griet", "lien", "an", "katrien", "sofie", "elke",
    "jan", "piet", "kees", "daan", "sem", "lucas", "thijs", "bram", "ruben", "jeroen", "bas",
    "maarten", "wouter", "joost", "sander", "pieter", "dirk", "henk", "gert", "wim", "johan",
    "koen", "bart", "tom", "jens", "stijn", "wout", "geert", "lars", "milan", "yusuf", "mohamed",
    "fatima", "samira", "ayse", "priya", "chen", "mei", "olga", "tomasz",
)  # fmt: skip
LAST_NAMES: Final[tuple[str, ...]] = (
    "devries", "jansen", "vandenberg", "bakker", "visser", "smit", "meijer", "deboer", "mulder",
    "degroot", "bos", "vos", "peters", "hendriks", "vanleeuwen", "dekker", "brouwer", "dewit",
    "dijkstra", "smits", "degraaf", "vanderlinden", "kok", "jacobs", "dehaan", "vermeulen",
    "vandenheuvel", "vanderveen", "vandijk", "schouten", "willems", "hoekstra", "koster",
    "prins", "huisman", "peeters", "maes", "janssens", "claes", "goossens", "wouters", "desmet",
    "dubois", "lambert", "mertens", "willems", "vandamme", "depauw", "verhoeven", "declercq",
    "aydin", "yilmaz", "elidrissi", "benali", "nguyen", "kowalski", "santos", "rahman",
)  # fmt: skip
# (domain, weight) by country.
MAIL_DOMAINS: Final[dict[str, tuple[tuple[str, float], ...]]] = {
    "NL": (
        ("gmail.com", 0.30), ("hotmail.com", 0.18), ("outlook.com", 0.10), ("ziggo.nl", 0.10),
        ("kpnmail.nl", 0.08), ("live.nl", 0.06), ("icloud.com", 0.06), ("xs4all.nl", 0.04),
        ("planet.nl", 0.03), ("home.nl", 0.03), ("proton.me", 0.02),
    ),
    "BE": (
        ("gmail.com", 0.34), ("telenet.be", 0.24), ("hotmail.com", 0.14), ("skynet.be", 0.10),
        ("outlook.be", 0.08), ("proximus.be", 0.05), ("icloud.com", 0.05),
    ),
}  # fmt: skip
# People with no e-mail address at all (they book by phone or at the desk). Accounts of the
# others hold their address a bit more often, so the YAML's presence rates hold over all accounts.
NO_EMAIL_SHARE: Final[float] = 0.04
# Case variations of stored addresses: "Anna.Devries@Gmail.Com" and "ANNA.DEVRIES@GMAIL.COM".
TITLE_CASE_SHARE: Final[float] = 0.04
UPPER_CASE_SHARE: Final[float] = 0.01
# A duplicate account holds the same address (retyped) or another one of the person's.
DUPLICATE_SAME_EMAIL_SHARE: Final[float] = 0.5
# Accounts that hold a postcode (and country).
POSTCODE_PRESENT: Final[float] = 0.9
# Share of institutions that store Dutch postcodes with a space ("1234 AB").
NL_POSTCODE_SPACE_SHARE: Final[float] = 0.5
# Within an institution, accounts that deviate from its postcode style (typed by hand).
POSTCODE_STYLE_NOISE: Final[float] = 0.15
# Dutch postcode letters: F, I, O, Q, U and Y are not used; SA, SD and SS are not issued.
_NL_LETTERS: Final[str] = "ABCDEGHJKLMNPRSTVWXZ"
_NL_FORBIDDEN_PAIRS: Final[frozenset[str]] = frozenset({"SA", "SD", "SS"})
_CUSTOMER_NUMBER_RANGE: Final[tuple[int, int]] = (1_000_000, 9_999_999)
# Channels whose accounts get the YAML's "online" e-mail presence; the others the desk's.
ONLINE_CHANNELS: Final[frozenset[str]] = frozenset(
    {"online_own", "reseller", "group_sales", "partner_pass"}
)


@dataclass(frozen=True, slots=True)
class PersonIdentity:
    email: pl.Series  # String, null for people without an address
    postcode: pl.Series  # String, canonical ("1234AB" or "2000")
    area: IntArray  # 4-digit postcode area


@dataclass(frozen=True, slots=True)
class Accounts:
    """Customer accounts. Arrays are indexed by account; `of_order` maps orders to accounts."""

    institution: IntArray
    person: IntArray
    customer_number: IntArray
    duplicate: BoolArray  # the person's second account at this institution
    email: pl.Series  # as stored by the institution (may be null)
    postcode: pl.Series  # as stored (may be null)
    country: pl.Series  # may be null
    birth_year: pl.Series  # Int64, may be null
    of_order: IntArray  # account of every order, -1 for anonymous walk-ins


def _pick_weighted(
    items: tuple[tuple[str, float], ...], n: int, rng: np.random.Generator
) -> IntArray:
    w = np.asarray([p for _, p in items])
    return rng.choice(len(items), size=n, p=w / w.sum()).astype(np.int64)


def _dedupe(email: pl.Series, rng: np.random.Generator) -> pl.Series:
    """Make addresses unique by appending digits to the local part of repeated ones.

    The first holder of an address keeps it; later ones become e.g. "anna.devries27@...". Two
    people never share an address, so an e-mail match key never merges two people.
    """
    frame = pl.DataFrame({"email": email})
    parts = pl.col("email").str.split_exact("@", 1)
    for _ in range(20):
        repeated = frame.select(
            pl.col("email").is_not_null() & ~pl.col("email").is_first_distinct()
        ).to_series()
        if not repeated.any():
            return frame["email"]
        digits = pl.Series(rng.integers(1, 100, size=len(frame))).cast(pl.String)
        frame = frame.with_columns(
            email=pl.when(repeated)
            .then(
                pl.concat_str(
                    [
                        parts.struct.field("field_0"),
                        digits,
                        pl.lit("@"),
                        parts.struct.field("field_1"),
                    ]
                )
            )
            .otherwise(pl.col("email"))
        )
    raise RuntimeError("could not make e-mail addresses unique")  # pragma: no cover


def person_identities(population: Population, rng: np.random.Generator) -> PersonIdentity:
    """Each person's e-mail address (or null) and full postcode."""
    n = population.n_people
    country = population.country()
    domain = np.empty(n, dtype=object)
    for c, items in MAIL_DOMAINS.items():
        mine = country == c
        names = np.asarray([d for d, _ in items], dtype=object)
        domain[mine] = names[_pick_weighted(items, int(mine.sum()), rng)]
    area = layout().area_code[population.area]
    letters = np.asarray(list(_NL_LETTERS), dtype=object)
    pair = letters[rng.integers(0, len(letters), n)] + letters[rng.integers(0, len(letters), n)]
    # The three pairs that are never issued are replaced by a common one.
    pair = np.where(np.isin(pair, list(_NL_FORBIDDEN_PAIRS)), "AB", pair)
    frame = pl.DataFrame(
        {
            "first": np.asarray(FIRST_NAMES, dtype=object)[rng.integers(0, len(FIRST_NAMES), n)],
            "last": np.asarray(LAST_NAMES, dtype=object)[rng.integers(0, len(LAST_NAMES), n)],
            "yy": population.birth_year % 100,
            "style": rng.integers(0, 6, n),
            "domain": domain,
            "has_email": rng.random(n) >= NO_EMAIL_SHARE,
            "area": area,
            "pair": pair,
            "nl": country == "NL",
        },
        schema_overrides={
            "first": pl.String,
            "last": pl.String,
            "domain": pl.String,
            "pair": pl.String,
        },
    )
    first, last, style = pl.col("first"), pl.col("last"), pl.col("style")
    local = (
        pl.when(style == 0).then(pl.concat_str([first, pl.lit("."), last]))
        .when(style == 1).then(pl.concat_str([first, last]))
        .when(style == 2).then(pl.concat_str([first.str.slice(0, 1), pl.lit("."), last]))
        .when(style == 3).then(pl.concat_str([first, pl.lit("_"), last]))
        .when(style == 4).then(pl.concat_str([first, pl.col("yy").cast(pl.String).str.zfill(2)]))
        .otherwise(pl.concat_str([last, pl.lit("."), first]))
    )  # fmt: skip
    area_text = pl.col("area").cast(pl.String)
    out = frame.select(
        email=pl.when(pl.col("has_email")).then(pl.concat_str([local, pl.lit("@"), "domain"])),
        postcode=pl.when(pl.col("nl"))
        .then(pl.concat_str([area_text, pl.col("pair")]))
        .otherwise(area_text),
    )
    return PersonIdentity(email=_dedupe(out["email"], rng), postcode=out["postcode"], area=area)


def _institution_rates(
    params: SimulationParams, n_institutions: int, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray, FloatArray, BoolArray]:
    """Per institution: e-mail rate online, at the desk, birth-year missing rate, postcode style."""
    ident = params.identity
    online = rng.uniform(
        ident.email_present_online.low, ident.email_present_online.high, n_institutions
    )
    desk = rng.uniform(
        ident.email_present_box_office.low, ident.email_present_box_office.high, n_institutions
    )
    missing = rng.uniform(
        ident.birth_year_missing.low, ident.birth_year_missing.high, n_institutions
    )
    space = rng.random(n_institutions) < NL_POSTCODE_SPACE_SHARE
    return online, desk, missing, space


def _customer_numbers(
    institution: IntArray, n_institutions: int, rng: np.random.Generator
) -> IntArray:
    """Random customer numbers, unique within each institution."""
    low, high = _CUSTOMER_NUMBER_RANGE
    out = np.empty(len(institution), dtype=np.int64)
    for j in range(n_institutions):
        mine = np.flatnonzero(institution == j)
        out[mine] = low + rng.choice(high - low + 1, size=len(mine), replace=False)
    return out


def build_accounts(
    population: Population,
    orders: Orders,
    plans: tuple[InstitutionPlan, ...],
    people: PersonIdentity,
    params: SimulationParams,
    rng: np.random.Generator,
) -> Accounts:
    n_links = len(population.link_person)
    identified = np.flatnonzero(~orders.anonymous)
    link = orders.link[identified]
    per_link = np.bincount(link, minlength=n_links)
    has_account = per_link > 0

    # Duplicates: the YAML share is of people with an account; only someone with two or more
    # orders can show up under two accounts, so they carry the whole share.
    share = params.identity.duplicate_accounts_within_institution
    eligible = per_link >= 2
    p_dup = min(1.0, share * has_account.sum() / max(1, eligible.sum()))
    duplicated = eligible & (rng.random(n_links) < p_dup)

    first_account = np.full(n_links, -1, dtype=np.int64)
    first_account[has_account] = np.arange(int(has_account.sum()))
    second_account = np.full(n_links, -1, dtype=np.int64)
    second_account[duplicated] = int(has_account.sum()) + np.arange(int(duplicated.sum()))

    # The person's later orders at that institution move to the second account at random, at
    # least the last one.
    order_in_time = identified[np.lexsort((orders.ordered_at[identified], link))]
    link_sorted = orders.link[order_in_time]
    start = np.searchsorted(link_sorted, link_sorted, side="left")
    position = np.arange(len(order_in_time)) - start
    last = position == per_link[link_sorted] - 1
    move = duplicated[link_sorted] & (position > 0) & (rng.random(len(order_in_time)) < 0.5)
    moved_any = np.bincount(link_sorted[move], minlength=n_links) > 0
    move |= duplicated[link_sorted] & last & ~moved_any[link_sorted]
    of_order = np.full(len(orders), -1, dtype=np.int64)
    of_order[order_in_time] = np.where(
        move, second_account[link_sorted], first_account[link_sorted]
    )

    account_link = np.concatenate([np.flatnonzero(has_account), np.flatnonzero(duplicated)])
    n_accounts = len(account_link)
    is_duplicate = np.zeros(n_accounts, dtype=np.bool_)
    is_duplicate[int(has_account.sum()) :] = True
    institution = population.link_institution[account_link]
    person = population.link_person[account_link]

    # What the account stores. The channel of its first order decides how likely an e-mail is.
    first_order = np.full(n_accounts, -1, dtype=np.int64)
    first_order[of_order[order_in_time][::-1]] = order_in_time[::-1]
    channel_is_online = np.isin(
        np.asarray(CHANNELS)[orders.channel[first_order]], list(ONLINE_CHANNELS)
    )
    online, desk, missing, space = _institution_rates(params, len(plans), rng)
    email_rate = np.where(channel_is_online, online[institution], desk[institution])
    email_rate = np.minimum(1.0, email_rate / (1.0 - NO_EMAIL_SHARE))
    frame = pl.DataFrame(
        {
            "email": people.email.gather(person),
            "has_email": rng.random(n_accounts) < email_rate,
            "variant": rng.random(n_accounts),
            "alternative": is_duplicate & (rng.random(n_accounts) >= DUPLICATE_SAME_EMAIL_SHARE),
            "postcode": people.postcode.gather(person),
            "country": population.country()[person],
            "has_postcode": rng.random(n_accounts) < POSTCODE_PRESENT,
            "space": space[institution] ^ (rng.random(n_accounts) < POSTCODE_STYLE_NOISE),
            "birth_year": population.birth_year[person],
            "has_birth_year": rng.random(n_accounts) >= missing[institution],
        }
    )
    parts = pl.col("email").str.split_exact("@", 1)
    email = (
        pl.when(pl.col("alternative"))
        .then(
            pl.concat_str(
                [parts.struct.field("field_0"), pl.lit("+tickets@"), parts.struct.field("field_1")]
            )
        )
        .otherwise(pl.col("email"))
    )
    email = (
        pl.when(pl.col("variant") < TITLE_CASE_SHARE)
        .then(email.str.to_titlecase())
        .when(pl.col("variant") < TITLE_CASE_SHARE + UPPER_CASE_SHARE)
        .then(email.str.to_uppercase())
        .otherwise(email)
    )
    nl_spaced = pl.concat_str(
        [pl.col("postcode").str.slice(0, 4), pl.lit(" "), pl.col("postcode").str.slice(4, 2)]
    )
    postcode = (
        pl.when(pl.col("country") == "NL").then(
            pl.when(pl.col("space")).then(nl_spaced).otherwise(pl.col("postcode"))
        )
    ).otherwise(pl.col("postcode"))
    stored = frame.select(
        email=pl.when(pl.col("has_email")).then(email),
        postcode=pl.when(pl.col("has_postcode")).then(postcode),
        country=pl.when(pl.col("has_postcode")).then(pl.col("country")),
        birth_year=pl.when(pl.col("has_birth_year")).then(pl.col("birth_year")),
    )
    return Accounts(
        institution=institution,
        person=person,
        customer_number=_customer_numbers(institution, len(plans), rng),
        duplicate=is_duplicate,
        email=stored["email"],
        postcode=stored["postcode"],
        country=stored["country"],
        birth_year=stored["birth_year"].cast(pl.Int64),
        of_order=of_order,
    )
