"""The dashboard over HTTP as any client sees it: the real `publiek-coordinator serve` on a
loopback port, over a release store as a coordinator leaves it. Every number shown or
downloaded is the store's; pages load nothing from elsewhere; bad requests and bad options get
clear answers. (The same pages in a real browser: tests/test_dashboard_browser.py.)"""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pydantic
import pytest

from coordinator.cli import main as coordinator_main
from coordinator.dashboard import labels, models, pages, views
from coordinator.store import ReleaseStore, StoredRelease, table_frame
from tests.dashboard_support import (
    Served,
    fetch,
    fill_store,
    hostile_plan,
    pages_of,
    release_of,
    serve,
    stop,
)

# --- reading pages back ---------------------------------------------------------------------


@dataclass
class Section:
    rows: list[list[str]] = field(default_factory=list)
    svgs: int = 0
    svg_titles: list[str] = field(default_factory=list)
    svg_descs: list[str] = field(default_factory=list)
    bars: list[float] = field(default_factory=list)  # widths of rect.bar, in order
    errorbars: int = 0
    tiles: int = 0
    downloads: dict[str, str] = field(default_factory=dict)  # "csv"/"parquet" -> href


class Page(HTMLParser):
    """The parts of a release page the tests compare with the store."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: dict[str, Section] = {}
        self.links: list[tuple[str, str]] = []  # (class, href)
        self.refs: list[str] = []  # every src= and href=
        self.scripts = 0
        self.csp: str | None = None  # a <meta http-equiv="Content-Security-Policy">
        self._section: Section | None = None
        self._in_body = False
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._svg_depth = 0
        self._text_into: list[str] | None = None
        self._buf: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        for key in ("src", "href"):
            if key in a:
                self.refs.append(a[key])
        if tag == "script":
            self.scripts += 1
        if tag == "meta" and a.get("http-equiv", "").lower() == "content-security-policy":
            self.csp = a["content"]
        if tag == "a" and "href" in a:
            self.links.append((a.get("class", ""), a["href"]))
        if tag == "section" and "table" in a.get("class", "").split():
            self._section = self.sections.setdefault(a["id"].removeprefix("t-"), Section())
        s = self._section
        if s is None:
            return
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "svg":
            self._svg_depth += 1
            if self._svg_depth == 1 and "chart" in a.get("class", "").split():
                s.svgs += 1
        elif tag == "title" and self._svg_depth == 1 and len(s.svg_titles) < s.svgs:
            # The chart's own title (the first in its svg), not a mark's tooltip.
            self._text_into, self._buf = s.svg_titles, []
        elif tag == "desc" and self._svg_depth == 1 and len(s.svg_descs) < s.svgs:
            self._text_into, self._buf = s.svg_descs, []
        elif tag == "rect" and "bar" in a.get("class", "").split():
            s.bars.append(float(a["width"]))
        elif tag == "path" and "errorbar" in a.get("class", "").split():
            s.errorbars += 1
        elif tag == "g" and a.get("class") == "tile":
            s.tiles += 1
        if tag == "a" and "download" in a.get("class", "").split():
            kind = "csv" if "csv" in a["class"] else "parquet" if "parquet" in a["class"] else ""
            if kind:
                s.downloads[kind] = a["href"]

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag == "svg":
            self._svg_depth -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None
        elif tag == "tbody":
            self._in_body = False
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._section is not None:
            self._section.rows.append(self._row)
            self._row = None
        elif tag == "svg":
            self._svg_depth -= 1
        elif tag in ("title", "desc") and self._text_into is not None:
            self._text_into.append("".join(self._buf))
            self._text_into = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._text_into is not None:
            self._buf.append(data)


def shown(value: int | float | None, measure: str) -> str:
    """How the page must print a stored number: thousands separated; revenue in euros."""
    if value is None:
        return "suppressed"
    if measure == "revenue_cents":
        return f"{value / 100:,.2f}"
    return f"{round(value):,}"


def external(refs: list[str]) -> list[str]:
    """References that would make a browser fetch something from another host."""
    return [r for r in refs if re.match(r"^(https?:)?//", r)]


# --- the server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, list[StoredRelease]]]:
    folder = tmp_path_factory.mktemp("dashboard")
    releases = fill_store(folder / "releases.sqlite")
    served = serve(folder / "releases.sqlite")
    yield served, releases
    code, err = stop(served)
    assert code == 0, err
    assert "Traceback" not in err, err


def test_catalogue_lists_every_release_newest_first(world) -> None:
    served, releases = world
    got = fetch(served.url)
    assert got.status == 200
    assert got.headers["content-type"].startswith("text/html")
    page = Page(got.text)
    linked = [href for cls, href in page.links if cls == "release-link"]
    assert linked == [f"/releases/{r.release_id}" for r in reversed(releases)]
    for r in releases:
        assert r.ref in got.text and r.title in got.text
        rho = r.document()["privacy"]["rho_per_node"]
        assert f"{labels.rho(rho)} (ε ≈" in got.text
    # The store is named by its file name, never by where it lies on the server.
    assert "releases.sqlite" in got.text
    assert str(served.store.parent) not in got.text


def test_release_page_shows_every_table_with_exactly_the_stored_numbers(world) -> None:
    served, releases = world
    stored = releases[-1]
    doc = stored.document()
    got = fetch(f"{served.url}releases/{stored.release_id}")
    assert got.status == 200
    page = Page(got.text)
    assert list(page.sections) == [t["analysis_id"] for t in doc["tables"]]
    for table in doc["tables"]:
        section = page.sections[table["analysis_id"]]
        dims = [d["name"] for d in table["dimensions"]]
        assert len(section.rows) == len(table["cells"]), table["analysis_id"]
        for row, cell in zip(section.rows, table["cells"], strict=True):
            keys, (est, interval) = row[: len(dims)], row[len(dims) :]
            for text, dim in zip(keys, dims, strict=True):
                assert text == cell[dim] or text.endswith(f" {cell[dim]}"), (text, cell)
            estimate = None if cell["suppressed"] else cell["estimate"]
            assert est == shown(estimate, table["measure"])
            low, high = (shown(cell[k], table["measure"]) for k in ("ci95_low", "ci95_high"))
            assert interval == f"{low} – {high}"


def test_every_chart_draws_its_table(world) -> None:
    served, releases = world
    stored = releases[-1]
    doc = stored.document()
    page = Page(fetch(f"{served.url}releases/{stored.release_id}").text)
    for table in doc["tables"]:
        section = page.sections[table["analysis_id"]]
        visible = [c for c in table["cells"] if not c["suppressed"]]
        assert section.svgs >= 1
        assert all(t.strip() for t in section.svg_titles)
        assert all("95% intervals" in d for d in section.svg_descs)
        # One bar and one error bar per cell that is not suppressed, over all panels.
        assert len(section.bars) == len(visible) == section.errorbars, table["analysis_id"]
        if len(table["dimensions"]) == 1:
            # Bars are proportional to the estimates (on one scale from zero).
            pairs = [(w, c["estimate"]) for w, c in zip(section.bars, visible, strict=True)]
            wide = [(w, e) for w, e in pairs if w > 20]
            (w0, e0) = max(wide, key=lambda p: p[0])
            for w, e in wide:
                assert w / w0 == pytest.approx(e / e0, abs=0.01), table["analysis_id"]
        names = [d["name"] for d in table["dimensions"]]
        if "region" in names:
            n_maps = (
                1
                if len(names) == 1
                else len(table["dimensions"][1 - names.index("region")]["keys"])
            )
            assert section.tiles == 21 * n_maps


def test_cost_and_provenance_in_plain_language(world) -> None:
    served, releases = world
    stored = releases[-1]
    doc = stored.document()
    text = fetch(f"{served.url}releases/{stored.release_id}").text
    privacy = doc["privacy"]
    assert (
        "Each of the 12 institutions that took part spent"
        f" {labels.rho(privacy['rho_per_node'])} of its privacy budget on this release"
        f" (ε ≈ {privacy['epsilon_per_node']:.2f} at δ = 10⁻⁷)"
    ) in text
    assert "the coordinator saw only sums" in text
    for value in (doc["plan"]["sha256"], doc["run_id"], stored.release_id, stored.ref):
        assert value in text
    for p in doc["participants"]:
        assert f"<code>{p['institution_id']}</code>" in text
    # The plan as run, as text.
    assert "suppress_below = 1.0" in text
    for table in doc["tables"]:
        assert f"{labels.rho(table['noise']['rho_per_node'])} per institution" in text
        bound = table["noise"]["bound"]
        cells = bound["max_cells"]
        where = "in one cell" if cells == 1 else f"in at most {cells} cells"
        assert f"each customer counts {where}" in text or f"counts once, {where}" in text


def test_downloads_hold_exactly_what_the_store_holds(world, tmp_path: Path) -> None:
    served, releases = world
    with ReleaseStore(served.store, create=False) as store:
        for stored in releases:
            store.export(stored.release_id, "csv", tmp_path / stored.release_id / "csv")
            store.export(stored.release_id, "parquet", tmp_path / stored.release_id / "pq")
    for stored in releases:
        page = Page(fetch(f"{served.url}releases/{stored.release_id}").text)
        for table in stored.document()["tables"]:
            aid = table["analysis_id"]
            links = page.sections[aid].downloads
            csv = fetch(urllib.parse.urljoin(served.url, links["csv"]))
            assert csv.status == 200
            assert csv.headers["content-type"].startswith("text/csv")
            assert csv.headers["content-disposition"] == f'attachment; filename="{aid}.csv"'
            assert csv.body == (tmp_path / stored.release_id / "csv" / f"{aid}.csv").read_bytes()
            parquet = fetch(urllib.parse.urljoin(served.url, links["parquet"]))
            assert parquet.status == 200
            exported = tmp_path / stored.release_id / "pq" / f"{aid}.parquet"
            assert parquet.body == exported.read_bytes()
            assert pl.read_parquet(io.BytesIO(parquet.body)).equals(table_frame(table))
        document = fetch(f"{served.url}releases/{stored.release_id}/release.json")
        assert document.status == 200
        assert document.body == stored.text.encode("utf-8")


def test_a_release_is_found_by_plan_and_version_and_redirects_to_its_id(world) -> None:
    served, releases = world
    host = urllib.parse.urlsplit(served.url)
    for ref, expected in (
        ("sector-2024", releases[2]),
        ("sector-2024@1", releases[1]),
        ("demo-s1-2024@1", releases[0]),
    ):
        conn = http.client.HTTPConnection(host.hostname or "", host.port, timeout=30)
        conn.request("GET", f"/releases/{urllib.parse.quote(ref)}")
        response = conn.getresponse()
        response.read()
        conn.close()
        assert response.status == 307
        assert response.getheader("location") == f"/releases/{expected.release_id}"
        assert fetch(f"{served.url}releases/{ref}").status == 200


def test_unknown_releases_and_tables_are_404_with_a_reason(world) -> None:
    served, releases = world
    got = fetch(f"{served.url}releases/no-such-plan")
    assert got.status == 404
    assert got.headers["content-type"].startswith("text/html")
    assert "no release &#39;no-such-plan&#39;" in got.text
    assert str(served.store.parent) not in got.text
    bad_version = fetch(f"{served.url}releases/sector-2024@x")
    assert bad_version.status == 404 and "must be a number" in bad_version.text
    table = fetch(f"{served.url}releases/{releases[0].release_id}/tables/nope.csv")
    assert table.status == 404
    assert "has no table 'nope'" in json.loads(table.body)["detail"]
    api = fetch(f"{served.url}api/releases/nope")
    assert api.status == 404
    assert json.loads(api.body)["detail"].startswith("no release 'nope'")


def test_the_api_answers_with_the_store(world) -> None:
    served, releases = world
    listing = json.loads(fetch(f"{served.url}api/releases").body)
    assert [r["release_id"] for r in listing] == [r.release_id for r in reversed(releases)]
    for item, stored in zip(listing, reversed(releases), strict=True):
        assert item["ref"] == stored.ref and item["version"] == stored.version
        assert item["n_tables"] == stored.n_tables and item["plan_sha256"] == stored.plan_sha256
        assert fetch(urllib.parse.urljoin(served.url, item["links"]["page"])).status == 200
        one = fetch(urllib.parse.urljoin(served.url, item["links"]["api"]))
        assert one.headers["content-type"] == "application/json"
        assert one.body == stored.text.encode("utf-8")  # the stored bytes, not a re-encoding
    stored = releases[-1]
    for table in stored.document()["tables"]:
        got = fetch(f"{served.url}api/releases/{stored.ref}/tables/{table['analysis_id']}")
        assert json.loads(got.body) == table


def test_the_openapi_schema_describes_the_api_and_every_stored_release(world) -> None:
    served, releases = world
    schema = json.loads(fetch(f"{served.url}openapi.json").body)
    assert set(schema["paths"]) == {
        "/api/releases",
        "/api/releases/{ref}",
        "/api/releases/{ref}/tables/{analysis_id}",
        "/releases/{ref}/release.json",
        "/releases/{ref}/tables/{analysis_id}.csv",
        "/releases/{ref}/tables/{analysis_id}.parquet",
    }
    assert {"Release", "Table", "ReleaseSummary"} <= set(schema["components"]["schemas"])
    ok = schema["paths"]["/api/releases/{ref}"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["$ref"].endswith("/Release")
    # The schema is true of the data: every stored release validates against it...
    for stored in releases:
        models.Release.model_validate(stored.document())
    # ... and it is a real check: a document without its tables does not.
    broken = {k: v for k, v in releases[0].document().items() if k != "tables"}
    with pytest.raises(pydantic.ValidationError):
        models.Release.model_validate(broken)
    # No interactive docs: they load scripts from a CDN.
    assert fetch(f"{served.url}docs").status == 404
    assert fetch(f"{served.url}redoc").status == 404
    assert "/api/releases/{ref}" in fetch(f"{served.url}api").text


def test_pages_need_no_javascript_and_nothing_from_elsewhere(world) -> None:
    served, releases = world
    for path, got in pages_of(served, releases):
        assert got.status == 200, path
        page = Page(got.text)
        assert page.scripts == 0, path
        assert external(page.refs) == [], path
        assert got.headers["content-security-policy"] == pages.SERVED_CSP
        assert got.headers["x-content-type-options"] == "nosniff"
        assert "data:," in page.refs  # the favicon, so the browser asks for nothing
    css = fetch(f"{served.url}static/dashboard.css")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")
    assert "url(" not in css.text and "@import" not in css.text  # nothing to fetch


def test_markup_in_titles_and_institution_ids_is_shown_as_text(tmp_path: Path) -> None:
    doc = release_of(
        hostile_plan(),
        1,
        participants=[f"inst-{i}" for i in range(9)] + ['<img src=x onerror="alert(1)">'],
    )
    with ReleaseStore(tmp_path / "r.sqlite") as store:
        stored = store.put(doc)
        entry = views.catalogue_entry(store.list()[0], stored.document())
    links = pages.served_links("/")
    for html in (
        pages.release_page(views.release_view(stored), links),
        pages.catalogue_page([entry], "r.sqlite", links),
        pages.report(stored),
    ):
        assert "<script>alert(1)</script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
        assert "<b>bold</b>" not in html
        assert Page(html).scripts == 0
    assert "<img src=x" not in pages.release_page(views.release_view(stored), links)
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in pages.release_page(
        views.release_view(stored), links
    )


# --- the one-file report -------------------------------------------------------------------


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "coordinator", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def run_main(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, cwd: Path, *args: str
) -> tuple[int, str, str]:
    """The command in this process, from ``cwd`` (cheaper than a process for refusals; an
    uncaught exception fails the test as a traceback would)."""
    monkeypatch.chdir(cwd)
    code = coordinator_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def data_uri(href: str) -> bytes:
    head, _, payload = href.partition(",")
    assert head.startswith("data:") and head.endswith(";base64"), head
    return base64.b64decode(payload)


def test_export_html_writes_one_self_contained_report(tmp_path: Path, capsys, monkeypatch) -> None:
    releases = fill_store(tmp_path / "releases.sqlite")
    stored = releases[-1]
    out = tmp_path / "note" / "report.html"
    result = cli(
        "export", "sector-2024", "--store", "releases.sqlite", "--html", str(out), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout and stored.ref in result.stdout
    text = out.read_text(encoding="utf-8")
    page = Page(text)
    assert page.scripts == 0
    assert external(page.refs) == []
    assert page.csp == pages.REPORT_CSP  # the file forbids itself any request
    assert '<link rel="stylesheet"' not in text and "<style>" in text
    doc = stored.document()
    assert list(page.sections) == [t["analysis_id"] for t in doc["tables"]]
    with ReleaseStore(tmp_path / "releases.sqlite", create=False) as store:
        store.export(stored.release_id, "csv", tmp_path / "csv")
        store.export(stored.release_id, "parquet", tmp_path / "pq")
    for table in doc["tables"]:
        section = page.sections[table["analysis_id"]]
        assert section.svgs >= 1 and len(section.rows) == len(table["cells"])
        aid = table["analysis_id"]
        assert data_uri(section.downloads["csv"]) == (tmp_path / "csv" / f"{aid}.csv").read_bytes()
        assert (
            data_uri(section.downloads["parquet"])
            == (tmp_path / "pq" / f"{aid}.parquet").read_bytes()
        )
    document = next(href for cls, href in page.links if href.startswith("data:application/json"))
    assert data_uri(document) == stored.text.encode("utf-8")
    # The methodology travels with it.
    assert 'id="methodology"' in text and "Why small cells are suppressed" in text

    # Never overwritten; a folder, or a release that is not there, is refused by name.
    code, _, err = run_main(capsys, monkeypatch, tmp_path, "export", "sector-2024", "--store",
                            "releases.sqlite", "--html", str(out))  # fmt: skip
    assert code == 2 and "exist" in err
    assert out.read_text(encoding="utf-8") == text
    code, _, err = run_main(capsys, monkeypatch, tmp_path, "export", "sector-2024", "--store",
                            "releases.sqlite", "--html", str(tmp_path))  # fmt: skip
    assert code == 2 and "is a folder" in err
    code, _, err = run_main(capsys, monkeypatch, tmp_path, "export", "nope", "--store",
                            "releases.sqlite", "--html", "x.html")  # fmt: skip
    assert code == 2 and "no release 'nope'" in err
    assert not (tmp_path / "x.html").exists()


# --- serve: bad options ---------------------------------------------------------------------


def test_serve_refuses_what_it_cannot_serve(tmp_path: Path, capsys, monkeypatch) -> None:
    def serve_main(*args: str) -> tuple[int, str]:
        code, _, err = run_main(capsys, monkeypatch, tmp_path, "serve", *args)
        return code, err

    # Without --store, outside the repository: the demo's store is not there; say what to do.
    code, err = serve_main("--port", "0")
    assert code == 2 and "demo-output/releases.sqlite" in err and "make demo" in err
    code, err = serve_main("--store", "nope.sqlite", "--port", "0")
    assert code == 2 and "nope.sqlite does not exist" in err
    (tmp_path / "notes.txt").write_text("not a database\n")
    code, err = serve_main("--store", "notes.txt", "--port", "0")
    assert code == 2 and "not a publiek release store" in err
    fill_store(tmp_path / "releases.sqlite")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        code, err = serve_main("--store", "releases.sqlite", "--port", port)
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err
    # An address that is not this machine's (a documentation address: nothing is sent to it).
    code, err = serve_main("--store", "releases.sqlite", "--host", "192.0.2.1", "--port", "0")
    assert code == 2 and "cannot listen on 192.0.2.1:0" in err
    assert "Traceback" not in err


def test_serve_shows_releases_stored_while_it_runs(tmp_path: Path) -> None:
    store_path = tmp_path / "releases.sqlite"
    oldest = fill_store(store_path)[0]
    served = serve(store_path)
    try:
        before = Page(fetch(served.url).text)
        assert len([1 for cls, _ in before.links if cls == "release-link"]) == 3
        with ReleaseStore(store_path) as store:
            added = store.put(release_of(hostile_plan(), 9))
        after = Page(fetch(served.url).text)
        linked = [href for cls, href in after.links if cls == "release-link"]
        assert linked[0] == f"/releases/{added.release_id}" and len(linked) == 4
        assert linked[-1] == f"/releases/{oldest.release_id}"
    finally:
        code, err = stop(served)
    assert code == 0 and "Traceback" not in err
