"""How a release table becomes charts, generically by its dimensions: shapes that no plan has
yet (a `segment` dimension, three dimensions) render too; suppressed cells get no bar; revenue
is shown in euros; the axis is round and starts at zero; unknown release content is shown."""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

import pytest

from coordinator.dashboard import charts, labels, pages, views
from coordinator.store import ReleaseStore, content_id
from tests.dashboard_support import release_of, sector_plan


def table(
    dims: dict[str, list[str]], values: list[int | None], measure: str = "bookers"
) -> dict[str, Any]:
    """A release table of any shape, in the release document's form."""
    cells = []
    for keys, value in zip(itertools.product(*dims.values()), values, strict=True):
        cell: dict[str, Any] = dict(zip(dims, keys, strict=True))
        cell.update(
            estimate=value,
            ci95_low=max(0, (value or 0) - 50),
            ci95_high=(value or 0) + 50,
            noisy_sum=(value or 0) + 7,
            suppressed=value is None,
        )
        cells.append(cell)
    return {
        "analysis_id": "t",
        "title": "A table",
        "statistic": "S7",
        "measure": measure,
        "dimensions": [{"name": n, "keys": k} for n, k in dims.items()],
        "contributors": ["inst-01", "inst-02"],
        "excluded": [{"institution_id": "inst-03", "reason": "refused: over its budget cap"}],
        "noise": {
            "mechanism": "discrete_gaussian",
            "mode": "secure",
            "scale_per_node": 10.0,
            "nodes_added": 2,
            "sd_total": 25.0,
            "l2_sensitivity": 1.0,
            "bound": {"max_cells": 1, "max_per_cell": 1},
            "rho_per_node": "0.02",
            "epsilon_per_node": 1.0,
        },
        "interval": {"confidence": 0.95, "half_width_raw": 49.0, "covers": "the added noise"},
        "post_processing": {"consistent_with": [], "non_negative": True},
        "cells": cells,
    }


def bars(svg: str) -> list[float]:
    return [float(w) for w in re.findall(r'<rect class="bar" [^>]*width="([\d.]+)"', svg)]


def test_a_segment_table_renders_as_panels_per_segment() -> None:
    # What the segmentation will publish: segments by discipline.
    segments = ["1", "2", "3"]
    disciplines = ["toneel", "dans", "film", "overig"]
    values: list[int | None] = [400, 300, 200, None, 100, 900, None, 50, 10, 20, 30, 40]
    view = views.table_view(table({"segment": segments, "discipline": disciplines}, values), {})
    (figure,) = view.figures
    assert figure.kind == "panels"
    assert figure.panel_titles == ("1", "2", "3")
    assert "one panel per audience segment" in figure.caption
    drawn = [len(bars(svg)) for svg in figure.svgs]
    assert drawn == [3, 3, 4]  # a bar per cell that is not suppressed
    # One scale across panels: the widest bar (900) is the widest on the page.
    widths = [w for svg in figure.svgs for w in bars(svg)]
    assert max(widths) == bars(figure.svgs[1])[1]
    assert [d.label for d in view.dimensions] == ["Audience segment", "Discipline"]
    assert view.n_suppressed == 2 and "2 suppressed" in view.summary


def test_one_dimension_of_an_unknown_name_renders_as_bars() -> None:
    view = views.table_view(table({"segment": ["a_b", "c"]}, [10, 20]), {})
    (figure,) = view.figures
    assert figure.kind == "bars"
    assert bars(figure.svgs[0])[1] == pytest.approx(2 * bars(figure.svgs[0])[0], abs=0.2)
    assert [c.labels for c in view.cells] == [("A b",), ("C",)]


def test_three_dimensions_render_as_panels_of_the_first() -> None:
    dims = {
        "discipline": ["toneel", "dans"],
        "quarter": ["2024Q1", "2024Q2"],
        "returning": ["new", "returning"],
    }
    view = views.table_view(table(dims, list(range(1, 9))), {})
    (figure,) = view.figures
    assert figure.panel_titles == ("Toneel (theatre)", "Dans (dance)")
    assert [len(bars(s)) for s in figure.svgs] == [4, 4]
    assert "2024Q1 × New" in figure.svgs[0]


def test_regions_get_a_tile_map_one_per_key_of_the_other_dimension() -> None:
    plan = sector_plan()
    doc = release_of(plan, 1)
    by_id = {t["analysis_id"]: t for t in doc["tables"]}
    one = views.table_view(by_id["s1_tickets_region"], {})
    assert [f.kind for f in one.figures] == ["bars", "region-map"]
    region_map = one.figures[1].svgs[0]
    assert region_map.count('<g class="tile">') == 21
    assert "Noord-Holland" in region_map and "Onbekend" in region_map
    two = views.table_view(by_id["s1_tickets_region_discipline"], {})
    assert [f.kind for f in two.figures] == ["panels", "region-maps"]
    maps = two.figures[1]
    assert len(maps.svgs) == 15 and maps.legend is not None
    assert all(s.count('<g class="tile">') == 21 for s in maps.svgs)


def test_suppressed_cells_get_no_bar_and_say_why() -> None:
    view = views.table_view(table({"age_band": ["0-17", "18-34"]}, [None, 500]), {})
    svg = view.figures[0].svgs[0]
    assert len(bars(svg)) == 1
    assert "suppressed: cannot be told from zero" in svg
    assert "0-17: suppressed, cannot be told from zero (95% interval 0 to 50)" in svg
    assert view.cells[0].estimate == "suppressed" and view.cells[0].suppressed


def test_revenue_is_shown_in_euros() -> None:
    view = views.table_view(table({"discipline": ["dans"]}, [123456], "revenue_cents"), {})
    assert view.cells[0].estimate == "1,234.56"
    assert view.cells[0].low == "1,234.06" and view.cells[0].noisy_sum == "1,234.63"
    assert view.measure_label == "Revenue (€)"
    assert ">1,234.6</text>" in view.figures[0].svgs[0]  # the bar's label is in euros too
    # Sentences name the unit as a word: "a standard deviation of 0.25 euros".
    assert "0.25 euros;" in view.noise and "revenue (€)" not in view.noise


@pytest.mark.parametrize("top", [0.4, 1, 7, 99, 101, 1234, 987_654, 3.2e9])
def test_the_value_axis_is_round_and_covers_every_interval(top: float) -> None:
    axis_max, step = charts.nice_scale(top)
    assert axis_max >= top
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 9) in (1, 2, 5)
    assert 3 <= round(axis_max / step) <= 6
    assert axis_max - step < top  # no empty tick beyond the data


def test_an_empty_or_all_suppressed_table_still_draws() -> None:
    assert charts.nice_scale(0) == (1.0, 0.25)
    view = views.table_view(table({"discipline": ["dans", "film"]}, [None, None]), {})
    assert len(bars(view.figures[0].svgs[0])) == 0
    assert "2 suppressed" in view.summary


def test_keys_and_dimensions_read_as_words() -> None:
    assert labels.key_label("region", "NL-FR") == "Fryslân"
    assert labels.key_label("institution_region", "BE-VAN") == "Antwerpen"
    assert (
        labels.key_label("discipline", "klassieke_muziek") == "Klassieke muziek (classical music)"
    )
    assert labels.key_label("quarter", "2024Q3") == "2024Q3"
    assert labels.key_label("lead_time_band", "0-1 d") == "0-1 d"
    assert labels.dimension_label("segment") == "Audience segment"
    assert labels.dimension_label("new_thing") == "New thing"
    assert labels.number(1234567) == "1,234,567"
    assert labels.number(1234567, 100) == "12,345.67"
    assert views.delta_text(1e-7) == "10⁻⁷"
    assert views.delta_text(2e-7) == "2e-07"


def test_content_the_dashboard_does_not_know_is_shown_as_it_is(tmp_path) -> None:
    # A release that also carries a segmentation model (say): nothing of it is dropped.
    doc = release_of(sector_plan(), 1)
    del doc["release_id"]
    doc["segmentation"] = {"k": 3, "centres": [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]}
    doc["release_id"] = content_id(doc)
    with ReleaseStore(tmp_path / "r.sqlite") as store:
        stored = store.put(doc)
    view = views.release_view(stored)
    assert [name for name, _ in view.other] == ["segmentation"]
    html = pages.release_page(view, pages.served_links("/"))
    assert "Other content of this release: <code>segmentation</code>" in html
    assert "&#34;centres&#34;" in html and "0.5" in html


def _segment_model(k: int) -> dict[str, Any]:
    """A segmentation model as a release carries it (the form of protocols/segment_model.py)."""
    return {
        "schema": "publiek.segment-model/1",
        "model_id": "seg-2024-abc",
        "title": "Audiences 2024",
        "space": {
            "features": [
                {"name": "frequency", "low": 1, "high": 20, "transform": "log"},
                {"name": "share_classical", "low": 0, "high": 1, "transform": "identity"},
            ],
            "origin": [0.5, 0.5],
            "radius": 0.71,
        },
        "segments": [
            {
                "key": f"segment_{i:02d}",
                "label": f"label {i} <i>",
                "description": f"About {i} visits a year.",
                "centre": [i / (k + 1), 1 - i / (k + 1)],
                "share": 1 / k,
            }
            for i in range(1, k + 1)
        ],
        "card": {"method": "DP federated k-means", "rho": "0.2"},
    }


def _with(doc: dict[str, Any], **extra: Any) -> dict[str, Any]:
    out = {k: v for k, v in doc.items() if k != "release_id"}
    out.update(extra)
    out["release_id"] = content_id(out)
    return out


def test_a_segmentation_shows_its_segments_and_names_its_tables(tmp_path) -> None:
    base = release_of(sector_plan(), 1)
    s12 = table(
        {"segment": ["segment_01", "segment_02", "segment_03"], "discipline": ["dans", "film"]},
        [100, 200, None, 400, 500, 600],
    )
    s12["analysis_id"], s12["title"] = "s12_segment_discipline", "Customers by segment"
    doc = _with(base, tables=[*base["tables"], s12], segmentations=[_segment_model(3)])
    with ReleaseStore(tmp_path / "r.sqlite") as store:
        view = views.release_view(store.put(doc))
    (model,) = view.segmentations
    assert model.features == ("frequency", "share_classical")
    assert [s.share for s in model.segments] == ["33.3%"] * 3
    assert model.segments[0].centre == ("0.25", "0.75")
    assert view.other == ()  # known, so not repeated as raw content
    # The segment tables call segments by their labels, in charts and in the table.
    segment_table = view.tables[-1]
    assert segment_table.figures[0].panel_titles[0] == "Segment 01: label 1 <i>"
    assert segment_table.cells[0].labels == ("Segment 01: label 1 <i>", "Dans (dance)")
    html = pages.release_page(view, pages.served_links("/"))
    assert "Audience segments: Audiences 2024" in html
    assert "label 1 &lt;i&gt;" in html and "label 1 <i>" not in html
    assert "About 2 visits a year." in html and "DP federated k-means" in html


def test_a_segmentation_of_another_shape_is_shown_as_it_is(tmp_path) -> None:
    odd = {"model_id": "x", "segments": "not a list"}
    doc = _with(release_of(sector_plan(), 1), segmentations=[odd])
    with ReleaseStore(tmp_path / "r.sqlite") as store:
        view = views.release_view(store.put(doc))
    assert view.segmentations == ()
    assert [name for name, _ in view.other] == ["segmentations"]


def test_an_estimated_table_says_how_and_what_its_interval_leaves_out(tmp_path) -> None:
    # A reach table (S7-S10) carries its method and a note, such as where S8's households come
    # from; the page shows both (as text), and tables without them show no method.
    doc = release_of(sector_plan(), 1)
    first = doc["tables"][0]
    first["reach"] = {
        "section": "reach",
        "method": "distinct people from sketches <b>summed</b>. Intervals cover the noise.",
        "note": "households: CBS StatLine 71486ned (file h.csv, sha256 ab12)",
    }
    with ReleaseStore(tmp_path / "r.sqlite") as store:
        stored = store.put(_with(doc))
    view = views.release_view(stored)
    shown = {t.analysis_id: t for t in view.tables}
    # In plain words first (the release's own, or a fallback for releases made without one);
    # the release's technical text folded below.
    assert shown[first["analysis_id"]].method.startswith("An estimate from noisy counts")
    assert shown[first["analysis_id"]].method_detail.startswith("distinct people")
    assert all(not t.method for t in view.tables if t.analysis_id != first["analysis_id"])
    html = pages.release_page(view, pages.served_links("/"))
    assert html.count("<dt>Method</dt>") == 1
    assert " Note: households: CBS StatLine 71486ned (file h.csv, sha256 ab12)." in html
    assert (
        "<summary>Technical detail</summary>Distinct people from sketches"
        " &lt;b&gt;summed&lt;/b&gt;. Intervals cover the noise.</details>" in html
    )


def test_an_estimated_table_does_not_borrow_the_sums_sentences() -> None:
    # A reach table's noise is on the sketch's buckets and its interval the estimator's own:
    # "sd 11 ... ± 11,959" and a cap that "trims the heaviest buyers" would contradict it.
    reach = table({"sector": ["all"]}, [205_337], measure="people")
    reach["noise"]["sd_total"] = 11.0
    reach["interval"]["half_width_raw"] = 11_959.0
    reach["reach"] = {"method": "distinct people by inclusion-exclusion", "note": "a model"}
    view = views.table_view(reach, {})
    assert "per bucket" in view.noise and "± 11,959" in view.noise
    assert "95 times in 100 the noise is smaller than" not in view.noise
    assert "heaviest buyers" not in view.bound and "counts once" in view.bound
    assert "zero or above" in view.consistency
    reach["reach"]["plain"] = "Counted at one institution, modelled across institutions."
    assert views.table_view(reach, {}).method == reach["reach"]["plain"]
    counted = views.table_view(table({"sector": ["all"]}, [1_000], measure="tickets"), {})
    assert "the interval does not include" in counted.bound


def test_a_table_not_fitted_with_its_family_says_why() -> None:
    t = table({"discipline": ["toneel", "dans"]}, [100, 200], measure="tickets")
    t["post_processing"] |= {
        "not_fitted_with": ["by_quarter"],
        "not_fitted_because": "the tables differ by more than their noise allows",
        "not_fitted_test": "chi-squared 412 on 15 degrees of freedom; its 99.99% point is 45",
    }
    view = views.table_view(t, {"by_quarter": "Tickets by quarter"})
    assert (
        "Not made consistent with Tickets by quarter: the tables differ by more than their noise"
        " allows." in view.consistency
    )
    assert "chi-squared" not in view.consistency  # the test's figures stay in the release file


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("201871/60000000", "ρ ≈ 0.00336"),
        ("0.03", "ρ = 0.03"),
        ("0.6303742", "ρ ≈ 0.63"),
        ("1", "ρ = 1"),
        ("not a number", "ρ = not a number"),
    ],
)
def test_a_privacy_cost_reads_as_a_decimal(stored: str, shown: str) -> None:
    assert labels.rho(stored) == shown
    t = table({"sector": ["all"]}, [10])
    t["noise"]["rho_per_node"] = stored
    assert views.table_view(t, {}).cost.startswith(shown + " per institution")
