"""The institution's local policy: what it is willing to answer, checked before any charge."""

from __future__ import annotations

from dataclasses import dataclass, field

from privacy.budget import Rho
from protocols.errors import ErrorCode, PublicError
from protocols.messages import HistogramQuery, ReleaseMode


@dataclass(frozen=True, slots=True)
class Policy:
    max_rho_per_task: Rho = field(default_factory=lambda: Rho.parse("0.5"))
    # Secure aggregation unless the institution opts in to open mode (which shows the
    # coordinator its own noisy answer).
    allowed_modes: frozenset[ReleaseMode] = frozenset({ReleaseMode.SECURE})
    # None: every statistic the node can compute.
    allowed_statistics: frozenset[str] | None = None
    max_cells: int = 100_000

    def check(self, query: HistogramQuery) -> None:
        """Raise POLICY_REFUSED with every reason when the query is not acceptable."""
        reasons = []
        if query.mode not in self.allowed_modes:
            allowed = ", ".join(sorted(m.value for m in self.allowed_modes)) or "none"
            reasons.append(f"release mode {query.mode.value!r} is not allowed here ({allowed})")
        if query.rho > self.max_rho_per_task:
            reasons.append(
                f"a single task may cost at most rho {self.max_rho_per_task}, this one asks"
                f" {query.rho}"
            )
        if self.allowed_statistics is not None and query.statistic not in self.allowed_statistics:
            reasons.append(f"statistic {query.statistic!r} is not in this node's allowed list")
        if query.n_cells > self.max_cells:
            reasons.append(f"the table has {query.n_cells} cells, more than {self.max_cells}")
        if reasons:
            raise PublicError(ErrorCode.POLICY_REFUSED, "; ".join(reasons))
