"""The node configuration's data sections: file or SQL, mapping, match key, geography."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from node.config import EXAMPLE, ConfigError, parse_config
from node.datasource import setup_from_config
from node.geo import DistanceSource
from node.ingest.sources import CsvFile, ParquetFile, SqlQuery

BASE = """
institution_id = "inst-01"
institution_type = "theatre"
[coordinator]
address = "127.0.0.1:1"
[tls]
insecure = true
[ledger]
path = "ledger.sqlite"
"""


def config(tmp_path: Path, extra: str) -> Any:
    return parse_config(tomllib.loads(BASE + extra), tmp_path)


def test_example_config_documents_every_data_option() -> None:
    for option in ("mapping =", "max_bad_share", "[data.sql]", "url_env", "query_file",
                   "key_file", "[geography]", "location", "venues", "pc4_centroids"):  # fmt: skip
        assert option in EXAMPLE


def test_a_file_with_its_mapping_and_options(tmp_path: Path) -> None:
    (tmp_path / "mapping.toml").write_text('[source]\ndelimiter = ";"\n')
    (tmp_path / "match.key").write_text("ab" * 32)
    (tmp_path / "match.key").chmod(0o600)
    (tmp_path / "pc4.csv").write_text("country,area,lat,lon\nNL,1012,52.37,4.89\n")
    cfg = config(
        tmp_path,
        '[data]\ntickets = "export.parquet"\nmapping = "mapping.toml"\ncountry = "be"\n'
        'max_bad_share = 0.05\nas_of = 2024-12-31\n[matching]\nkey_file = "match.key"\n'
        '[geography]\nlocation = "52.37, 4.89"\nvenues = { "zaal-2" = "52.09, 5.12" }\n'
        'pc4_centroids = "pc4.csv"\n',
    )
    assert cfg.data.country == "BE" and cfg.data.max_bad_share == 0.05
    assert str(cfg.data.as_of) == "2024-12-31"
    setup = setup_from_config(cfg)
    assert isinstance(setup.source, ParquetFile)
    assert setup.settings.mapping.delimiter == ";"
    assert setup.settings.match_key is not None and setup.settings.match_key.key == b"\xab" * 32
    assert setup.geography.distance_source is DistanceSource.PC4
    assert setup.geography.venues[0][0] == "zaal-2"
    csv = setup_from_config(cfg, data_path=tmp_path / "other.csv")
    assert isinstance(csv.source, CsvFile) and csv.source.configured_delimiter == ";"


def test_sql_source_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLIEK_TEST_DB", "postgresql+psycopg://reader:geheim@db/tickets")
    (tmp_path / "export.sql").write_text("SELECT * FROM verkoop")
    cfg = config(tmp_path, '[data.sql]\nurl_env = "PUBLIEK_TEST_DB"\nquery_file = "export.sql"\n')
    assert cfg.data.tickets is None and cfg.data.sql is not None
    assert "geheim" not in repr(cfg)  # the URL may hold a password: never in a repr or a log
    source = setup_from_config(cfg).source
    assert isinstance(source, SqlQuery) and source.query == "SELECT * FROM verkoop"
    assert source.display == "SQL postgresql+psycopg://reader:***@db/tickets"


def test_data_problems_are_reported_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        config(
            tmp_path,
            '[data]\ntickets = "a.csv"\nformat = "xlsx"\ncountry = "Holland"\n'
            'max_bad_share = 2\nas_of = "yesterday"\n[data.sql]\nurl_env = "NOPE_NOT_SET"\n'
            '[geography]\nlocation = "somewhere"\nvenues = { "z" = "10, 10" }\n',
        )
    text = " | ".join(err.value.problems)
    for expected in (
        "data.tickets and [data.sql] both given",
        "environment variable NOPE_NOT_SET is not set",
        "needs exactly one of query and query_file",
        'data.format must be "csv" or "parquet"',
        "data.country must be a 2-letter country code",
        "data.max_bad_share must be a number from 0 to 1",
        "data.as_of must be a date",
        "geography.location: 'somewhere' is not 'latitude, longitude'",
        "geography.venues.z: '10, 10' is not in the Netherlands or Belgium",
    ):
        assert expected in text, expected


def test_files_named_by_the_config_are_checked_together(tmp_path: Path) -> None:
    (tmp_path / "mapping.toml").write_text("[columns]\nticket_id = 5\n")
    (tmp_path / "short.key").write_text("abcd")
    (tmp_path / "pc4.csv").write_text("country,area\n")
    cfg = config(
        tmp_path,
        '[data]\ntickets = "t.csv"\nmapping = "mapping.toml"\n[matching]\nkey_file = "short.key"\n'
        '[geography]\npc4_centroids = "pc4.csv"\n',
    )
    with pytest.raises(ConfigError) as err:
        setup_from_config(cfg)
    text = " | ".join(err.value.problems)
    assert "[columns] ticket_id must be a non-empty text" in text
    assert "at least 64 hexadecimal characters" in text
    assert "column 'lat' is missing" in text
