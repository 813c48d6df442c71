"""The HTML pages, from the templates in ``templates/``, and the one-file report.

Two ways to link: the served dashboard links to its own URLs; the report (``export --html``)
carries everything inside one file (CSS in a ``<style>``, downloads as ``data:`` links, the
methodology as a section) and forbids itself any network request with a Content-Security-Policy,
so it opens the same on a laptop without a connection.

Templates autoescape everything: titles, plan text and institution ids come from plans and
nodes, and are shown as text, never as markup.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

from coordinator.dashboard import views
from coordinator.release import table_csv
from coordinator.store import StoredRelease, table_parquet
from protocols.version import software_version

# What a served page may load: its own stylesheet, nothing else (no scripts at all).
SERVED_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none';"
    " form-action 'none'; frame-ancestors 'none'"
)
# The report: its inline <style>, data: images; no request of any kind leaves the file.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'"


@functools.cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("coordinator.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["version"] = software_version()
    return env


@functools.cache
def stylesheet() -> str:
    return (resources.files("coordinator.dashboard") / "static" / "dashboard.css").read_text(
        encoding="utf-8"
    )


@dataclass(frozen=True, slots=True)
class Links:
    """Where a page's links go: the served dashboard's URLs, or inside the report file."""

    static: bool
    home: str | None  # the catalogue (none in the report)
    methodology: str
    api: str | None
    stylesheet: str | None  # None: inline
    release_json: Callable[[str], str]
    report: Callable[[str], str | None]
    csv: Callable[[str, str], str]
    parquet: Callable[[str, str], str]
    release: Callable[[str], str]


def served_links(base: str) -> Links:
    """Links of the served dashboard, under ``base`` (``/`` or a proxy's prefix ending in /)."""
    return Links(
        static=False,
        home=base,
        methodology=f"{base}methodology",
        api=f"{base}api",
        stylesheet=f"{base}static/dashboard.css",
        release_json=lambda rid: f"{base}releases/{rid}/release.json",
        report=lambda rid: f"{base}releases/{rid}/report.html",
        csv=lambda rid, tid: f"{base}releases/{rid}/tables/{tid}.csv",
        parquet=lambda rid, tid: f"{base}releases/{rid}/tables/{tid}.parquet",
        release=lambda rid: f"{base}releases/{rid}",
    )


def _data_uri(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def report_links(stored: StoredRelease) -> Links:
    """Links inside the report: every download is carried in the file itself."""
    doc = stored.document()
    tables = {t["analysis_id"]: t for t in doc["tables"]}
    csvs = {
        tid: _data_uri("text/csv;charset=utf-8", table_csv(t).encode("utf-8"))
        for tid, t in tables.items()
    }
    parquets = {
        tid: _data_uri("application/vnd.apache.parquet", table_parquet(stored, t))
        for tid, t in tables.items()
    }
    release_json = _data_uri("application/json;charset=utf-8", stored.text.encode("utf-8"))
    return Links(
        static=True,
        home=None,
        methodology="#methodology",
        api=None,
        stylesheet=None,
        release_json=lambda _rid: release_json,
        report=lambda _rid: None,
        csv=lambda _rid, tid: csvs[tid],
        parquet=lambda _rid, tid: parquets[tid],
        release=lambda _rid: "#top",
    )


def _render(template: str, links: Links, **context: Any) -> str:
    return (
        _env()
        .get_template(template)
        .render(
            links=links,
            css=Markup(stylesheet()) if links.stylesheet is None else None,  # noqa: S704 (our own file)
            csp=REPORT_CSP if links.static else None,
            **context,
        )
    )


def catalogue_page(entries: Sequence[views.CatalogueEntry], store_name: str, links: Links) -> str:
    return _render("catalogue.html", links, entries=entries, store_name=store_name)


def release_page(view: views.ReleaseView, links: Links) -> str:
    return _render("release.html", links, r=view)


def methodology_page(links: Links) -> str:
    return _render("methodology_page.html", links)


def api_page(endpoints: Sequence[tuple[str, str, str]], links: Links) -> str:
    return _render("api.html", links, endpoints=endpoints)


def error_page(status: int, message: str, links: Links) -> str:
    return _render("error.html", links, status=status, message=message)


def report(stored: StoredRelease) -> str:
    """The one-file report of a release: the release page and the methodology, with every
    download inside, opening without a network."""
    return _render(
        "report.html", report_links(stored), r=views.release_view(stored), generated=True
    )
