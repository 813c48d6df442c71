"""Applying a segmentation model at an institution, without training and without sending
anything: a model file made elsewhere (a file of centres in the public customer space) is
read, every customer is placed in the nearest segment, and ``publiek-node segments`` and
``publiek-node report --segments`` show the institution's audience by segment next to the
sector's shares. Counts are checked against an independent nearest-centre computation; bad or
mismatched model files are refused by name, with exit code 2 and no traceback."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from node.cli import main as node_main
from node.data import load
from node.ingest.sources import file_source
from node.segments import ModelMismatch, SegmentData, audience_by_segment, label
from privacy.clustering.space import Feature, FeatureSpace
from protocols.features import customer_space
from protocols.segment_model import Segment, SegmentModel, read_model
from synthetic import SectorConfig, generate_sector
from synthetic.schema import write_ticket_line_csv
from tests.test_node_report import Page

SPACE = customer_space()


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = SectorConfig(n_institutions=1, seed=31, years=(2023, 2024), scale=0.03)
    sector = generate_sector(config)
    tickets = sector.tickets(sector.institutions[0].institution_id)
    path = tmp_path_factory.mktemp("export") / "ticket_line.csv"
    write_ticket_line_csv(tickets, path)
    return path


@pytest.fixture(scope="module")
def data(export: Path) -> SegmentData:
    # What the CLI computes from the same file with the same defaults (no configuration).
    return SegmentData.from_features(load(file_source(export)).features)


def handmade_model() -> SegmentModel:
    """A model nobody trained here: four centres written down by hand (say, a segmentation
    provider's), each a customer profile in the public scaled space."""
    n_numeric = 9
    mixes = np.eye(15)[[0, 3, 7, 11]]  # each centre's audience in one discipline
    levels = (0.2, 0.4, 0.6, 0.8)
    segments = tuple(
        Segment(
            key=f"segment_{i + 1:02d}",
            label=f"profile {i + 1}",
            description=f"hand-made profile {i + 1}",
            centre=tuple([level] * n_numeric + list(mix)),
            share=0.25,
        )
        for i, (level, mix) in enumerate(zip(levels, mixes, strict=True))
    )
    return SegmentModel("handmade-1", "Hand-made profiles", SPACE, segments)


def independent_counts(data: SegmentData, model: SegmentModel) -> list[int]:
    centres = np.asarray([s.centre for s in model.segments])
    d2 = ((data.scaled[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    return [int(c) for c in np.bincount(d2.argmin(axis=1), minlength=model.k)]


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = node_main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_labelling_puts_every_customer_in_the_nearest_segment(data: SegmentData) -> None:
    model = handmade_model()
    assert data.customers > 100
    labels = label(data, model.centres())
    assert labels.shape == (data.customers,)
    assert np.bincount(labels, minlength=4).tolist() == independent_counts(data, model)
    rows = audience_by_segment(model, data)
    assert [r.customers for r in rows] == independent_counts(data, model)
    assert sum(r.share for r in rows) == pytest.approx(1.0)
    for r in rows:
        assert r.index == pytest.approx(100 * r.share / 0.25)
    # a customer sitting on a centre is labelled with that centre
    one = SegmentData.from_matrix(np.asarray([model.segments[2].centre]), SPACE, data.as_of)
    assert label(one, model.centres()).tolist() == [2]
    empty = SegmentData.from_matrix(np.zeros((0, SPACE.dim)), SPACE, data.as_of)
    assert [r.customers for r in audience_by_segment(model, empty)] == [0, 0, 0, 0]


def test_a_model_for_other_features_is_refused_not_misapplied(data: SegmentData) -> None:
    other = FeatureSpace.box((Feature("income", 0, 1e5), Feature("age", 0, 100)))
    model = SegmentModel("other", "Other", other, (Segment("segment_01", "a", "a", (0.5, 0.5)),))
    with pytest.raises(ModelMismatch, match="made for other features than this node computes"):
        audience_by_segment(model, data)


def test_the_cli_applies_a_model_file_without_training(export: Path, tmp_path: Path) -> None:
    model = handmade_model()
    path = model.write(tmp_path / "segment-model-handmade-1.json")
    assert read_model(path) == model  # the file holds the whole model

    code, out, _ = cli("segments", str(path), str(export), "--json")
    assert code == 0
    rows = json.loads(out)
    data = SegmentData.from_features(load(file_source(export)).features)
    assert [r["customers"] for r in rows] == independent_counts(data, model)
    assert [r["key"] for r in rows] == [s.key for s in model.segments]

    code, out, _ = cli("segments", str(path), str(export))
    assert code == 0
    assert "nothing was sent" in out
    assert f"{sum(independent_counts(data, model)):,} customers with an account" in out
    assert "profile 3" in out


def test_the_report_shows_the_audience_by_segment(export: Path, tmp_path: Path) -> None:
    model = handmade_model()
    path = model.write(tmp_path / "model.json")
    html = tmp_path / "audience.html"
    code, _, _ = cli("report", str(export), "--out", str(html), "--segments", str(path))
    assert code == 0
    page = Page()
    page.feed(html.read_text(encoding="utf-8"))
    rows = page.rows("t-segments")
    data = SegmentData.from_features(load(file_source(export)).features)
    counts = independent_counts(data, model)
    assert list(rows) == [f"{s.key}: {s.label}" for s in model.segments]
    assert [int(float(v[0])) for v in rows.values()] == counts
    assert [float(v[2]) for v in rows.values()] == [25.0] * 4  # the sector's shares


BAD_MODELS = {
    "not-json": ("{ this is not json", "not valid JSON"),
    "wrong-schema": (json.dumps({"schema": "something/9"}), "schema must be"),
    "centre-outside-box": (None, "centre values must lie in the scaled box"),
    "too-few-values": (None, "centre has 3 values, the space 24"),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_bad_model_files_are_refused_by_name(export: Path, tmp_path: Path, case: str) -> None:
    text, message = BAD_MODELS[case]
    path = tmp_path / f"{case}.json"
    if text is None:
        doc = handmade_model().to_json()
        centre = doc["segments"][1]["centre"]
        doc["segments"][1]["centre"] = [7.0, *centre[1:]] if "outside" in case else [0.5] * 3
        text = json.dumps(doc)
    path.write_text(text)
    for argv in (
        ("segments", str(path), str(export)),
        ("report", str(export), "--out", str(tmp_path / "r.html"), "--segments", str(path)),
    ):
        code, out, err = cli(*argv)
        assert code == 2
        assert message in err
        assert "Traceback" not in err + out
    assert not (tmp_path / "r.html").exists()  # nothing half-written


def test_a_missing_or_mismatched_model_file_is_refused(export: Path, tmp_path: Path) -> None:
    code, _, err = cli("segments", str(tmp_path / "nope.json"), str(export))
    assert code == 2
    assert "file not found" in err
    other = FeatureSpace.box((Feature("income", 0, 1e5),))
    path = SegmentModel("x", "X", other, (Segment("segment_01", "a", "a", (0.5,)),)).write(
        tmp_path / "other.json"
    )
    code, _, err = cli("segments", str(path), str(export))
    assert code == 2
    assert "cannot be applied here" in err
