"""The dashboard as an ASGI app: pages for people, downloads and a JSON API for programs.

Pages (not in the OpenAPI schema):
  /                                   the catalogue of releases
  /releases/{ref}                     one release: charts, tables, cost, provenance
  /releases/{ref}/report.html         the same as one self-contained file
  /methodology, /api                  how to read the numbers; the API in words
API and downloads (in ``/openapi.json``):
  /api/releases, /api/releases/{ref}, /api/releases/{ref}/tables/{analysis_id}
  /releases/{ref}/release.json, /releases/{ref}/tables/{analysis_id}.csv|.parquet

``ref`` is a release id, ``plan-id@version``, or a plan id for its latest version; pages
redirect to the release id, the one URL that never shows another release. Everything is read
from the release store on each request (a coordinator may add releases while this runs);
rendered pages of a release are kept, since a stored release never changes.

No JavaScript, no third-party assets: FastAPI's interactive docs (which load scripts from a CDN)
are off; the schema is served as JSON and described on /api.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Final

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException

from coordinator.dashboard import models, pages, views
from coordinator.release import table_csv
from coordinator.store import (
    ReleaseNotFound,
    ReleaseStore,
    ReleaseSummary,
    StoredRelease,
    StoreError,
)
from coordinator.store import table_parquet as parquet_bytes
from protocols.version import software_version

PAGE_CACHE: Final[int] = 32  # rendered release pages kept (a sector release is ~1 MB of HTML)

PARQUET = "application/vnd.apache.parquet"


class _PageCache:
    """Rendered pages by key, the most recent few; safe across the server's threads."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._pages: OrderedDict[tuple[str, ...], str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...], render: Callable[[], str]) -> str:
        with self._lock:
            if key in self._pages:
                self._pages.move_to_end(key)
                return self._pages[key]
        page = render()
        with self._lock:
            self._pages[key] = page
            while len(self._pages) > self._size:
                self._pages.popitem(last=False)
        return page


def _base(request: Request) -> str:
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return f"{root}/"


def _attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


def create_app(store: ReleaseStore) -> FastAPI:
    """The dashboard over an open release store (which the caller closes).

    Pages and errors name the store by its file name only: where it lies on the server is
    nobody's business on a public page.
    """
    app = FastAPI(
        title="publiek releases",
        version=software_version(),
        description="Sector statistics released by a publiek coordinator: differentially private"
        " estimates with 95% intervals and their provenance, exactly as stored.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    shown_store = store.path.name

    def public(message: str) -> str:
        return message.replace(str(store.path), shown_store)

    cache = _PageCache(PAGE_CACHE)

    def stored(ref: str) -> StoredRelease:
        return store.get(ref)

    entries: dict[str, views.CatalogueEntry] = {}
    entries_lock = threading.Lock()

    def entry(summary: ReleaseSummary) -> views.CatalogueEntry:
        # A release never changes: its catalogue line is read from its document once.
        with entries_lock:
            known = entries.get(summary.release_id)
        if known is None:
            known = views.catalogue_entry(summary, stored(summary.release_id).document())
            with entries_lock:
                entries[summary.release_id] = known
        return known

    def table_of(release: StoredRelease, analysis_id: str) -> dict[str, Any]:
        for table in release.document()["tables"]:
            if table["analysis_id"] == analysis_id:
                return dict(table)
        raise HTTPException(
            404,
            f"release {release.ref} has no table {analysis_id!r} (its tables are listed at"
            f" /api/releases/{release.release_id})",
        )

    @app.middleware("http")
    async def headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", pages.SERVED_CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _problem(request, exc.status_code, public(str(exc.detail)))

    @app.exception_handler(ReleaseNotFound)
    async def not_found(request: Request, exc: ReleaseNotFound) -> Response:
        return _problem(request, 404, public(str(exc)))

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> Response:
        return _problem(request, 500, public(f"the release store cannot be read: {exc}"))

    # --- pages -----------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def catalogue(request: Request) -> HTMLResponse:
        summaries = list(reversed(store.list()))  # newest first
        entries = [entry(s) for s in summaries]
        links = pages.served_links(_base(request))
        return HTMLResponse(pages.catalogue_page(entries, shown_store, links))

    @app.get("/methodology", response_class=HTMLResponse, include_in_schema=False)
    def methodology(request: Request) -> HTMLResponse:
        return HTMLResponse(pages.methodology_page(pages.served_links(_base(request))))

    @app.get("/api", response_class=HTMLResponse, include_in_schema=False)
    def api_page(request: Request) -> HTMLResponse:
        endpoints = [
            (method.upper(), path, op.get("summary", ""))
            for path, ops in app.openapi()["paths"].items()
            for method, op in ops.items()
        ]
        return HTMLResponse(pages.api_page(endpoints, pages.served_links(_base(request))))

    @app.get("/static/dashboard.css", include_in_schema=False)
    def stylesheet() -> Response:
        return Response(
            pages.stylesheet(),
            media_type="text/css",
            headers={"Cache-Control": "public, max-age=3600"},
        )

    @app.get("/releases/{ref}", response_class=HTMLResponse, include_in_schema=False)
    def release_page(request: Request, ref: str) -> Response:
        release = stored(ref)
        base = _base(request)
        if ref != release.release_id:
            return RedirectResponse(f"{base}releases/{release.release_id}", status_code=307)
        page = cache.get(
            ("page", release.release_id, base),
            lambda: pages.release_page(views.release_view(release), pages.served_links(base)),
        )
        return HTMLResponse(page)

    @app.get("/releases/{ref}/report.html", include_in_schema=False)
    def report(ref: str) -> Response:
        release = stored(ref)
        page = cache.get(("report", release.release_id), lambda: pages.report(release))
        return HTMLResponse(
            page,
            headers={
                **_attachment(f"{release.plan_id}-{release.version}.report.html"),
                "Content-Security-Policy": pages.REPORT_CSP,
            },
        )

    # --- downloads -------------------------------------------------------------------------

    @app.get(
        "/releases/{ref}/release.json",
        summary="The release document, byte for byte as stored",
        tags=["downloads"],
        response_class=Response,
        responses={200: {"content": {"application/json": {}}}, 404: {"model": models.Problem}},
    )
    def release_json(ref: str) -> Response:
        release = stored(ref)
        return Response(
            release.text,
            media_type="application/json",
            headers=_attachment(f"{release.plan_id}-{release.version}.release.json"),
        )

    @app.get(
        "/releases/{ref}/tables/{analysis_id}.csv",
        summary="One table as CSV (the same bytes as publiek-coordinator export --csv)",
        tags=["downloads"],
        response_class=Response,
        responses={200: {"content": {"text/csv": {}}}, 404: {"model": models.Problem}},
    )
    def table_as_csv(ref: str, analysis_id: str) -> Response:
        release = stored(ref)
        return Response(
            table_csv(table_of(release, analysis_id)),
            media_type="text/csv; charset=utf-8",
            headers=_attachment(f"{analysis_id}.csv"),
        )

    @app.get(
        "/releases/{ref}/tables/{analysis_id}.parquet",
        summary="One table as Parquet (the same bytes as publiek-coordinator export --parquet)",
        tags=["downloads"],
        response_class=Response,
        responses={200: {"content": {PARQUET: {}}}, 404: {"model": models.Problem}},
    )
    def table_as_parquet(ref: str, analysis_id: str) -> Response:
        release = stored(ref)
        return Response(
            parquet_bytes(release, table_of(release, analysis_id)),
            media_type=PARQUET,
            headers=_attachment(f"{analysis_id}.parquet"),
        )

    # --- JSON API --------------------------------------------------------------------------

    @app.get(
        "/api/releases",
        summary="Every stored release, newest first",
        tags=["api"],
        response_model=list[models.ReleaseSummary],
    )
    def api_releases(request: Request) -> list[models.ReleaseSummary]:
        base = _base(request)
        return [
            models.ReleaseSummary(
                release_id=s.release_id,
                ref=s.ref,
                plan_id=s.plan_id,
                version=s.version,
                title=s.title,
                run_id=s.run_id,
                plan_sha256=s.plan_sha256,
                mode=s.mode,
                created_at=s.created_at,
                stored_at=s.stored_at,
                n_tables=s.n_tables,
                n_participants=s.n_participants,
                links=models.Links(
                    page=f"{base}releases/{s.release_id}",
                    document=f"{base}releases/{s.release_id}/release.json",
                    api=f"{base}api/releases/{s.release_id}",
                ),
            )
            for s in reversed(store.list())
        ]

    @app.get(
        "/api/releases/{ref}",
        summary="One release document: tables, cells, intervals, noise, cost, provenance",
        tags=["api"],
        response_model=None,
        responses={200: {"model": models.Release}, 404: {"model": models.Problem}},
    )
    def api_release(ref: str) -> Response:
        # The stored text itself: numbers exactly as stored, never re-serialised.
        return Response(stored(ref).text, media_type="application/json")

    @app.get(
        "/api/releases/{ref}/tables/{analysis_id}",
        summary="One table of a release, with its cells",
        tags=["api"],
        response_model=None,
        responses={200: {"model": models.Table}, 404: {"model": models.Problem}},
    )
    def api_table(ref: str, analysis_id: str) -> JSONResponse:
        return JSONResponse(table_of(stored(ref), analysis_id))

    return app


def _problem(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/") or request.url.path.endswith(
        (".json", ".csv", ".parquet")
    ):
        return JSONResponse({"detail": message}, status_code=status)
    return HTMLResponse(
        pages.error_page(status, message, pages.served_links(_base(request))), status_code=status
    )
