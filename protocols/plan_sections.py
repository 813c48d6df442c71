"""The common part of reading a plan's extra sections ([[segmentation]], [[reach]]).

Each section kind checks its own fields; what every kind shares is here: a list of at most a
few tables, each with a valid id that is unique across the whole plan, no unknown fields, and
secure mode. Problems go into ``problems`` so a plan reports all of them at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

from protocols.messages import ReleaseMode

SECTION_ID: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


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
    if not isinstance(raw, list) or len(raw) > limit:
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
        unknown = sorted(set(table) - fields)
        if unknown:
            problems.append(f"{where}: unknown field(s) {', '.join(unknown)}")
        if mode is not ReleaseMode.SECURE:
            problems.append(f"{where}: {secure_only}")
        yield table, sid, where, before
