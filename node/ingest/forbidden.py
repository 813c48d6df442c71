"""Columns a ticket export must not bring to the node (names, addresses, phone, payment, ...).

The domain notes list what is never needed and never read: names, street and house number,
phone, payment details, IP address, free text, seat, gender. We recognise such columns by the
words in their names, in Dutch and English (``Voornaam``, ``customer_last_name``, ``TelNr``,
``IBAN``, ``Opmerking``, ``Stoelnummer``, ``Geslacht``), and refuse the export by default:
data minimisation works best when the export never contains them. An operator who knows a
column is harmless (``Voorstellingsnaam`` is the title of a show) lists it under
``[source] ignore`` in the mapping, and the node then never loads it.
"""

from __future__ import annotations

import itertools
import re
from typing import Final

# Words that mark a column, by what it would reveal. Matched against whole words of the name.
_CATEGORIES: Final[dict[str, frozenset[str]]] = {
    "a name": frozenset(
        {
            "naam",
            "name",
            "voornaam",
            "achternaam",
            "familienaam",
            "tussenvoegsel",
            "voorletters",
            "initialen",
            "initials",
            "firstname",
            "lastname",
            "surname",
            "fullname",
            "givenname",
            "roepnaam",
        }
    ),
    "an address": frozenset(
        {
            "straat",
            "straatnaam",
            "street",
            "adres",
            "address",
            "huisnummer",
            "huisnr",
            "housenumber",
            "toevoeging",
            "bus",  # Flemish "bus 3": the flat within a building
        }
    ),
    "a phone number": frozenset(
        {"telefoon", "telefoonnummer", "tel", "telnr", "phone", "mobile", "mobiel", "gsm"}
    ),
    "payment details": frozenset(
        {
            "iban",
            "bic",
            "rekeningnummer",
            "bankrekening",
            "rekening",
            "bank",
            "creditcard",
            "card",
            "kaartnummer",
            "cvv",
            "cvc",
            "payment",
            "betaling",
            "betaalwijze",
            "incasso",
            "mandaat",
        }
    ),
    "an IP address": frozenset({"ip", "ipaddress", "ipadres", "useragent"}),
    "free text": frozenset(
        {
            "opmerking",
            "opmerkingen",
            "comment",
            "comments",
            "note",
            "notes",
            "notitie",
            "notities",
            "remark",
            "remarks",
            "memo",
            "freetext",
            "vrijetekst",
            "bericht",
            "message",
        }
    ),
    "a seat": frozenset({"seat", "stoel", "stoelnummer", "seatnumber", "rij", "row", "stoelnr"}),
    "gender": frozenset({"gender", "geslacht", "sex", "aanhef", "salutation"}),
    "a national identity number": frozenset(
        {"bsn", "sofinummer", "rijksregisternummer", "passport", "paspoort", "burgerservicenummer"}
    ),
}

# Two-word spellings that the word split leaves apart ("house number", "first name", ...).
_PAIRS: Final[dict[tuple[str, str], str]] = {
    ("house", "number"): "an address",
    ("first", "name"): "a name",
    ("last", "name"): "a name",
    ("full", "name"): "a name",
    ("given", "name"): "a name",
    ("family", "name"): "a name",
    ("ip", "address"): "an IP address",
    ("card", "number"): "payment details",
    ("account", "number"): "payment details",
    ("free", "text"): "free text",
    ("seat", "number"): "a seat",
    ("vrije", "tekst"): "free text",
}

# A "name" word next to one of these describes a thing, not a person ("event_name",
# "Voorstellingsnaam" splits as one word and is not matched at all).
_NOT_A_PERSON: Final[frozenset[str]] = frozenset(
    {
        "event",
        "evenement",
        "voorstelling",
        "performance",
        "show",
        "production",
        "productie",
        "venue",
        "zaal",
        "locatie",
        "location",
        "artist",
        "artiest",
        "genre",
        "product",
        "tarief",
        "price",
        "prijs",
        "channel",
        "kanaal",
        "file",
        "bestand",
        "organisation",
        "organisatie",
        "season",
        "seizoen",
        "pass",
        "membership",
        "lidmaatschap",
    }
)

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPLIT = re.compile(r"[^0-9a-zà-ÿ]+")


def words(column: str) -> list[str]:
    """Lower-case words of a column name: ``"CustomerLastName"`` -> customer, last, name."""
    return [w for w in _SPLIT.split(_CAMEL.sub(" ", column).lower()) if w]


def forbidden_reason(column: str) -> str | None:
    """What a column would reveal if it holds what its name says, or None if it looks fine."""
    ws = words(column)
    found: str | None = None
    for a, b in itertools.pairwise(ws):
        if (a, b) in _PAIRS:
            found = _PAIRS[(a, b)]
            break
    if found is None:
        for w in ws:
            for reason, vocabulary in _CATEGORIES.items():
                if w in vocabulary:
                    found = reason
                    break
            if found:
                break
    if found == "a name" and any(w in _NOT_A_PERSON for w in ws):
        return None
    return found
