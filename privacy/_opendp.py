"""The one place OpenDP is imported and its features switched on.

OpenDP gates its mechanisms behind the "contrib" feature flag (they are proven but not yet
vetted by the OpenDP committee). Switching it on here, once, and only here keeps the flag
visible to an auditor instead of scattered over the code base.
"""

from __future__ import annotations

import opendp.prelude as dp

dp.enable_features("contrib")

__all__ = ["dp"]
