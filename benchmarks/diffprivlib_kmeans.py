"""IBM diffprivlib's central DP k-means, run in its own environment (the baseline to beat).

    .venv-diffprivlib/bin/python benchmarks/diffprivlib_kmeans.py X.npy out.npz \\
        --k 11 --epsilons 0.5 1 2 --reps 3

diffprivlib 0.6.6 does not import with scikit-learn >= 1.7, which publiek uses, so it lives in
``.venv-diffprivlib`` (diffprivlib 0.6.6 with scikit-learn 1.6.1, pinned in
``benchmarks/diffprivlib-requirements.txt``; ``make diffprivlib-env``, which ``make bench``
runs). ``benchmarks/segmentation.py`` calls this script in that interpreter; nothing is
downloaded while a benchmark runs. This file imports nothing of publiek: only numpy and
diffprivlib.

The data is the pooled, scaled matrix (a trusted curator's view, rows in [0, 1]^d), with the
public bounds [0, 1] per feature, as diffprivlib asks; its KMeans is pure epsilon-DP (Su et
al. 2016's DPLloyd). Writes the centres of every run: ``eps<epsilon>_rep<r>``, each k x d.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from diffprivlib.models import KMeans  # type: ignore[import-not-found,unused-ignore]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--k", type=int, required=True)
    parser.add_argument("--epsilons", type=float, nargs="+", required=True)
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args()
    x = np.load(args.data)
    d = x.shape[1]
    out: dict[str, np.ndarray] = {}
    seconds = []
    for eps in args.epsilons:
        for rep in range(args.reps):
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # its "PrivacyLeakWarning"s are about bounds
                model = KMeans(
                    n_clusters=args.k,
                    epsilon=eps,
                    bounds=(np.zeros(d), np.ones(d)),
                    random_state=None,
                ).fit(x)
            seconds.append(time.perf_counter() - start)
            out[f"eps{eps:g}_rep{rep}"] = np.asarray(model.cluster_centers_, dtype=np.float64)
    out["seconds"] = np.asarray(seconds)
    np.savez(args.out, **out)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
