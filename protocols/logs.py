"""How the node and the coordinator write their logs: readable lines, or one JSON object a line.

Both programs log the same way so that one log pipeline (journald, Loki, Elasticsearch, a SIEM)
reads both. In JSON every line is an object with ``ts`` (UTC, ISO 8601, milliseconds),
``level``, ``component`` (publiek-node or publiek-coordinator), ``logger`` and ``message``, the
fixed fields the program adds (the node: ``institution``), and whatever the log call passes as
``extra`` (``event``, ``node``, ``code``, ``cert_serial``, ...): those names are the stable part to
alert on, the message is for people.

Chosen with ``--log-format json`` or ``PUBLIEK_LOG_FORMAT=json`` (containers, systemd units).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from typing import Any, Final

LOG_FORMATS: Final[tuple[str, ...]] = ("text", "json")
ENV_LOG_FORMAT: Final[str] = "PUBLIEK_LOG_FORMAT"

# Attributes every LogRecord has; anything else on a record came in through ``extra``.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def default_log_format() -> str:
    value = os.environ.get(ENV_LOG_FORMAT, "text").strip().lower()
    return value if value in LOG_FORMATS else "text"


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str, fields: dict[str, str] | None = None) -> None:
        super().__init__()
        self.component = component
        self.fields = dict(fields or {})

    def format(self, record: logging.LogRecord) -> str:
        stamp = dt.datetime.fromtimestamp(record.created, dt.UTC)
        doc: dict[str, Any] = {
            "ts": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "component": self.component,
            "logger": record.name,
            "message": record.getMessage(),
            **self.fields,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in doc:
                doc[key] = _plain(value)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes, not what it was at set-up.

    A handler bound to the stream object of the moment outlives it when that stream is
    replaced and closed (an embedding program, a test harness capturing output): every later
    record, grpc's own included, then ends in "--- Logging error --- ... I/O operation on closed
    file" instead of the log. Python's last-resort handler looks stderr up the same way.
    """

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:
        return sys.stderr


def setup_logging(
    component: str,
    level: str,
    log_format: str = "text",
    *,
    fields: dict[str, str] | None = None,
) -> None:
    """Send every log record to stderr in the chosen format (replacing earlier set-ups)."""
    handler = _CurrentStderrHandler()
    # On the handler too: libraries that set their own loggers' levels (Flower sets DEBUG)
    # still log at the level asked for.
    handler.setLevel(getattr(logging, level.upper()))
    if log_format == "json":
        handler.setFormatter(JsonFormatter(component, fields))
    else:
        tag = "".join(f"[{v}]" for v in (fields or {}).values())
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s {component}{tag} %(levelname)s %(message)s",
                datefmt="%Y-%m-%d %H:%M:%S",
            )
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))


def ensure_logging(component: str, level: str = "info") -> None:
    """Set up logging as ``setup_logging`` does unless the process already has it: for code
    that runs inside another program's process (Flower starts a process per ServerApp and per
    ClientApp message and configures only its own logger)."""
    if not logging.getLogger().handlers:
        setup_logging(component, level, default_log_format())
