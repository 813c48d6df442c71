"""The programs' log set-up: JSON lines carry the stable fields, and the handler follows stderr."""

from __future__ import annotations

import io
import json
import logging

import pytest

from protocols.logs import setup_logging


def test_json_lines_carry_component_fields_and_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    setup_logging("publiek-node", "info", "json", fields={"institution": "NL-T-01"})
    logging.getLogger("node.test").warning("refused", extra={"event": "task_refused", "code": 7})
    logging.getLogger("node.test").debug("not at this level")

    lines = err.getvalue().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["component"] == "publiek-node" and doc["institution"] == "NL-T-01"
    assert doc["level"] == "warning" and doc["message"] == "refused"
    assert doc["event"] == "task_refused" and doc["code"] == 7


def test_a_replaced_and_closed_stderr_does_not_break_later_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Set up while stderr is one stream, which is then closed and replaced (as a test harness
    # or an embedding program does): later records go to the new stderr, with no
    # "--- Logging error ---" from a handler still holding the closed stream.
    first = io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    setup_logging("publiek-coordinator", "info")
    logging.getLogger("grpc.test").warning("before")
    assert "before" in first.getvalue()
    first.close()

    second = io.StringIO()
    monkeypatch.setattr("sys.stderr", second)
    logging.getLogger("grpc.test").warning("after")
    assert "after" in second.getvalue()
    assert "Logging error" not in second.getvalue()
