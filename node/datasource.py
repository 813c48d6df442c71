"""From the node configuration (or command-line options) to a source, settings and geography.

The configuration names files (a mapping, a key file, a PC4 centroid table) that are read here,
once, with every problem in any of them reported together, each under the file it is in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from node.config import ConfigError, NodeConfig
from node.geo import Geography, GeographyError, load_pc4_centroids
from node.ingest.mapping import Mapping, MappingError, load_mapping
from node.ingest.matchkey import MatchKeyError, MatchKeySecret
from node.ingest.pipeline import DEFAULT_MAX_BAD_SHARE, IngestSettings
from node.ingest.sources import Source, SqlQuery, file_source


class SetupError(ConfigError):
    """Files named by the configuration cannot be used: ``sections`` maps a heading naming
    each file ("mapping m.toml") to its problems.

    A ConfigError, so callers that catch those still do; ``problems`` lists every problem with
    its heading, and the text gives each file's problems one a line under its heading.
    """

    def __init__(self, sections: dict[str, list[str]]) -> None:
        self.sections = sections
        flat = [f"{heading}: {p}" for heading, problems in sections.items() for p in problems]
        super().__init__(", ".join(sections), flat)

    def __str__(self) -> str:
        return "\n".join(listed(h, problems) for h, problems in self.sections.items())


def listed(heading: str, problems: list[str]) -> str:
    """Problems one a line under what they are about (a single one stays on its line)."""
    if len(problems) == 1:
        return f"{heading}: {problems[0]}"
    return f"{heading}: {len(problems)} problems" + "".join(f"\n  - {p}" for p in problems)


@dataclass(frozen=True, slots=True)
class DataSetup:
    source: Source
    settings: IngestSettings
    geography: Geography = field(default_factory=Geography)
    as_of: date | None = None


def _mapping(path: Path | None, problems: dict[str, list[str]]) -> Mapping:
    if path is None:
        return Mapping()
    try:
        return load_mapping(path)
    except MappingError as err:
        problems[f"mapping {path}"] = err.problems
        return Mapping()


def setup_from_config(
    config: NodeConfig, data_path: Path | None = None, mapping_path: Path | None = None
) -> DataSetup:
    """What the configuration says to read; ``data_path``/``mapping_path`` override it."""
    problems: dict[str, list[str]] = {}
    data = config.data
    mapping = _mapping(mapping_path or data.mapping, problems)
    source: Source
    if data_path is not None or data.sql is None:
        path = data_path or data.tickets or Path()
        source = file_source(
            path,
            fmt=None if data_path is not None else data.format,
            encoding=mapping.encoding,
            delimiter=mapping.delimiter,
        )
    else:
        source = SqlQuery(data.sql.url, data.sql.query)
    secret = None
    if config.match_key_file is not None:
        try:
            secret = MatchKeySecret.load(config.match_key_file)
        except MatchKeyError as err:
            problems[f"matching.key_file {config.match_key_file}"] = err.problems
    geo = config.geography
    pc4 = None
    if geo.pc4_centroids is not None:
        try:
            pc4 = load_pc4_centroids(geo.pc4_centroids)
        except GeographyError as err:
            problems[f"geography.pc4_centroids {geo.pc4_centroids}"] = err.problems
    if problems:
        raise SetupError(problems)
    return DataSetup(
        source=source,
        settings=IngestSettings(
            mapping=mapping,
            default_country=data.country,
            max_bad_share=data.max_bad_share,
            match_key=secret,
        ),
        geography=Geography(location=geo.location, venues=geo.venues, pc4=pc4),
        as_of=data.as_of,
    )


def setup_from_file(
    data_path: Path,
    mapping_path: Path | None = None,
    country: str = "NL",
    max_bad_share: float = DEFAULT_MAX_BAD_SHARE,
) -> DataSetup:
    """For ``check``/``report`` without a node configuration: a file and maybe a mapping."""
    problems: dict[str, list[str]] = {}
    mapping = _mapping(mapping_path, problems)
    if problems:
        raise SetupError(problems)
    return DataSetup(
        source=file_source(data_path, encoding=mapping.encoding, delimiter=mapping.delimiter),
        settings=IngestSettings(
            mapping=mapping, default_country=country, max_bad_share=max_bad_share
        ),
    )
