"""How fast is OpenDP's exact sampler against numpy's (unsafe) float noise?

Baseline named in issue 3: numpy's Gaussian sampler on the same vector, measured side by side.
Also measures the threaded safe path (the same OpenDP sampler on chunks, one per core), which is
what ``privacy.noise`` uses for long vectors. Prints one JSON object as its last line.

    python -m benchmarks.noise --quick
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.common import last_line, median_seconds, write_result
from privacy.noise import DiscreteGaussian


def run(quick: bool) -> dict[str, float]:
    sigma = 100.0
    noise = DiscreteGaussian(sigma)
    rng = np.random.default_rng(0)  # the baseline only: never used for a release
    big = np.zeros(1_000_000, dtype=np.int64)
    small = np.zeros(10_000, dtype=np.int64)
    reps_big = 1 if quick else 3
    reps_small = 7 if quick else 21

    def numpy_noise(x: np.ndarray) -> np.ndarray:
        return np.asarray(x + np.rint(rng.normal(0.0, sigma, x.shape[0])), dtype=np.int64)

    numpy_1m = median_seconds(lambda: numpy_noise(big), repeats=7)
    opendp_1m = median_seconds(lambda: noise.sample(big, parallel=False), reps_big, warmup=0)
    parallel_1m = median_seconds(lambda: noise.sample(big, parallel=True), reps_big, warmup=0)
    numpy_10k = median_seconds(lambda: numpy_noise(small), repeats=reps_small)
    opendp_10k = median_seconds(lambda: noise.sample(small), repeats=reps_small)
    return {
        "opendp_over_numpy_1m": opendp_1m / numpy_1m,
        "opendp_parallel_over_numpy_1m": parallel_1m / numpy_1m,
        "parallel_speedup_1m": opendp_1m / parallel_1m,
        "opendp_ms_10k": opendp_10k * 1000.0,
        "opendp_over_numpy_10k": opendp_10k / numpy_10k,
        "opendp_s_1m": opendp_1m,
        "numpy_ms_1m": numpy_1m * 1000.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.noise",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats (under a minute)")
    args = parser.parse_args(argv)
    result = run(args.quick)
    for key, value in result.items():
        print(f"{key:>32}: {value:,.3f}")
    write_result("noise", {"quick": args.quick, "sigma": 100.0}, result)
    print(last_line(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
