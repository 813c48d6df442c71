"""The JSON API's response shapes, for its OpenAPI schema.

The API answers with the stored document itself (so a number is exactly the stored one, never
re-serialised through a model); these models describe it for programmatic readers, and a test
validates every stored document against them so that the schema cannot drift from the data.
Models allow extra fields: a newer release (a segmentation model, say) still validates.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CellValue = str | int | float | bool | None


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Links(BaseModel):
    page: str = Field(description="the release's page in the dashboard")
    document: str = Field(description="the release document, exactly as stored (JSON)")
    api: str = Field(description="the release document through this API")


class ReleaseSummary(BaseModel):
    release_id: str = Field(description="content hash of the release: rel-...")
    ref: str = Field(description="plan-id@version")
    plan_id: str
    version: int = Field(description="1, 2, ... per plan, in the order stored")
    title: str
    run_id: str
    plan_sha256: str
    mode: str = Field(description="secure (the coordinator saw only sums) or open")
    created_at: str = Field(description="ISO 8601, UTC")
    stored_at: str = Field(description="ISO 8601, UTC")
    n_tables: int
    n_participants: int
    links: Links


class Dimension(BaseModel):
    name: str
    keys: list[str]


class Bound(_Open):
    max_cells: int
    max_per_cell: int


class Noise(_Open):
    mechanism: str
    mode: str
    scale_per_node: float
    nodes_added: int
    sd_total: float = Field(description="standard deviation of the noise in each cell")
    l2_sensitivity: float
    bound: Bound
    rho_per_node: str = Field(description="zCDP cost to each node, exact (a fraction)")
    epsilon_per_node: float


class Interval(_Open):
    confidence: float
    half_width_raw: float = Field(description="95% half-width of the raw noisy sums")
    covers: str


class Excluded(BaseModel):
    institution_id: str
    reason: str


class Table(_Open):
    analysis_id: str
    title: str
    statistic: str
    measure: str
    dimensions: list[Dimension]
    contributors: list[str]
    excluded: list[Excluded]
    noise: Noise
    interval: Interval
    post_processing: dict[str, Any]
    cells: list[dict[str, CellValue]] = Field(
        description="one per combination of keys: the keys by dimension name, then estimate"
        " (null when suppressed), ci95_low, ci95_high, noisy_sum, suppressed"
    )


class Participant(BaseModel):
    institution_id: str
    software_version: str


class Plan(_Open):
    id: str
    sha256: str
    mode: str
    min_nodes: int
    text: str = Field(description="the plan file as it was run")


class Privacy(_Open):
    unit: str
    accounting: str
    rho_per_node: str
    epsilon_per_node: float
    delta: float
    mode: str
    note: str


class Failed(BaseModel):
    analysis_id: str
    reason: str


class Release(_Open):
    schema_name: str = Field(alias="schema", description="publiek.release/1")
    release_id: str
    title: str
    created_at: str
    run_id: str
    coordinator_id: str
    software: dict[str, Any]
    plan: Plan
    participants: list[Participant]
    privacy: Privacy
    tables: list[Table]
    failed: list[Failed]


class Problem(BaseModel):
    detail: str
