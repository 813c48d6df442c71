"""The policymakers' view of the release store: a web dashboard and a self-contained report.

Everything shown is read from the release store (``coordinator/store.py``) and nothing is
re-derived: a chart's bar, a table's cell and a download are the stored document's numbers.
Charts are inline SVG drawn on the server (no JavaScript, no network), each with a text
alternative and the table behind it.

- ``labels``: names a person reads for dimensions, keys and measures.
- ``views``: a release document turned into what a page shows (plain-language cost, provenance).
- ``charts``: bar charts with error bars, small multiples, the region tile map.
- ``pages``: the HTML pages (templates in ``templates/``) and the one-file report.
- ``app``: the ASGI app (HTML pages, downloads, a JSON API with an OpenAPI schema).
- ``serve``: running it (``publiek-coordinator serve``).

``pages`` needs jinja2 and ``app``/``serve`` need fastapi and uvicorn: the ``dashboard`` extra.
"""
