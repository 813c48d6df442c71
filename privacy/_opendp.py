"""The one place OpenDP is imported and its features switched on.

OpenDP gates its mechanisms behind the "contrib" feature flag (they are proven but not yet
vetted by the OpenDP committee). Switching it on here, once, and only here keeps the flag
visible to an auditor instead of scattered over the code base.

We import OpenDP's modules directly rather than ``opendp.prelude``: the prelude also loads its
scikit-learn extras (and with them scikit-learn and SciPy) whenever scikit-learn is installed,
which would add most of a second to every node's start-up for nothing it uses.
"""

from __future__ import annotations

from types import SimpleNamespace

import opendp.combinators as _combinators
import opendp.domains as _domains
import opendp.measurements as _measurements
import opendp.metrics as _metrics
import opendp.mod as _mod

_mod.enable_features("contrib")

dp = SimpleNamespace(
    m=_measurements,
    c=_combinators,
    atom_domain=_domains.atom_domain,
    vector_domain=_domains.vector_domain,
    absolute_distance=_metrics.absolute_distance,
    l1_distance=_metrics.l1_distance,
    l2_distance=_metrics.l2_distance,
)

__all__ = ["dp"]
