"""The common part of reading a plan's extra sections ([[segmentation]], [[reach]]).

Each section kind checks its own fields; what every kind shares is here: a list of at most a
few tables, each with a valid id that is unique across the whole plan, no unknown keys, and
secure mode. Problems go into ``problems`` so a plan reports all of them at once.

Every table of a plan lists the keys it takes, and a key outside the list is a problem, never
ignored: a misspelt ``keys`` or ``min_nodes`` would otherwise leave the default in place (the
whole price-type key set, the social tariff included) while the operator believes the plan says
otherwise.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterator, Mapping
from typing import Any, Final, TypeGuard

from protocols.messages import ReleaseMode

SECTION_ID: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def closest(name: str, known: Collection[str]) -> str | None:
    """The known name ``name`` is most likely a typo of, if one is close."""
    match = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return match[0] if match else None


def unknown_keys(
    table: Mapping[str, Any],
    known: Collection[str],
    where: str,
    problems: list[str],
    what: str = "key",
    belongs: Mapping[str, str] | None = None,
) -> None:
    """One problem for each key of ``table`` outside ``known``, with the closest known key, or
    the table it belongs in (``belongs``: key -> table) when it is another table's key."""
    for key in table:
        if key in known:
            continue
        near = closest(key, known)
        if belongs and key in belongs:
            hint = f"it belongs in {belongs[key]}; "
        elif near:
            hint = f"did you mean {near!r}? "
        else:
            hint = ""
        problems.append(
            f"{where}: unknown {what} {key!r} ({hint}expected: {', '.join(sorted(known))})"
        )


def shown(value: Any) -> str:
    """A value as the plan wrote it in TOML (true, "8", 100.5), for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value[:40].replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)[:40]


def whole_number(value: Any) -> TypeGuard[int]:
    """A TOML integer: not a bool (TOML true is Python's 1), not a float such as 100.5 or 8.0,
    not a string."""
    return isinstance(value, int) and not isinstance(value, bool)


def section_tables(
    raw: Any,
    kind: str,
    limit: int,
    too_many: str,
    fields: frozenset[str] | set[str],
    mode: ReleaseMode,
    secure_only: str,
    problems: list[str],
    seen: set[str],
) -> Iterator[tuple[dict[str, Any], str, str, int]]:
    """Each usable section table with its id, the name problems give it ("kind 'id'") and
    the number of problems before it (a section with problems of its own is not built)."""
    if raw is None:
        return
    if not isinstance(raw, list):
        # [kind] (one table) where [[kind]] (a list of tables) is meant.
        problems.append(f"{kind} must be written [[{kind}]] (a list of tables), not [{kind}]")
        return
    if len(raw) > limit:
        problems.append(too_many)
        return
    for i, table in enumerate(raw):
        where = f"{kind} #{i + 1}"
        if not isinstance(table, dict):
            problems.append(f"{where} is not a table")
            continue
        before = len(problems)
        sid = table.get("id")
        if not isinstance(sid, str) or not SECTION_ID.match(sid):
            problems.append(f"{where}: id must be lowercase letters, digits, '-', '_' or '.'")
            sid = f"{kind}-{i + 1}"
        else:
            where = f"{kind} {sid!r}"
            if sid in seen:
                problems.append(f"{where}: id is used twice")
            seen.add(sid)
        unknown_keys(table, fields, where, problems)
        if "title" in table and not isinstance(table["title"], str):
            problems.append(f"{where}: title must be text (in quotes)")
        if mode is not ReleaseMode.SECURE:
            problems.append(f"{where}: {secure_only}")
        yield table, sid, where, before
