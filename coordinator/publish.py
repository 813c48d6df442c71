"""Publishing a run's release: into the release store first, then as files; the run is marked.

The same steps whichever transport the run went over (``publiek-coordinator run`` on gRPC, the
Flower ServerApp in ``coordinator.flower``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from coordinator.release import write_release
from coordinator.state import RunStateStore
from coordinator.store import ReleaseStore, StoreError


def publish(
    doc: dict[str, Any],
    *,
    run_id: str,
    store: ReleaseStore,
    state: RunStateStore,
    out: Path,
    progress: Callable[[str], None],
) -> int:
    """Store the release, mark the run released, write the files; 0, or 2 if the store failed.

    The store first: it is the record of what was published. Should it fail, the files in
    ``out`` are still written, so the release (its budget is spent) is not lost.
    """
    code = 0
    try:
        stored = store.put(doc)
        progress(f"release {doc['release_id']} stored as {stored.ref} in {store.path}")
    except StoreError as err:
        progress(f"the release could NOT be stored in {store.path}: {err}")
        code = 2
    state.finish_run(run_id, "released", doc["release_id"])
    paths = write_release(doc, out)
    progress(f"release {doc['release_id']} written: " + ", ".join(str(p) for p in paths))
    return code
