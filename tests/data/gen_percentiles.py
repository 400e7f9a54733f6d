#!/usr/bin/env python3
"""Generates tests/data/percentiles.json: random arrays with numpy's percentiles and means.

`tests/metrics_numpy.rs` feeds each array into a `MetricSeries` and requires its percentiles
and averages to equal these bit for bit. Re-run after changing the cases:

    pip install numpy
    python3 tests/data/gen_percentiles.py > tests/data/percentiles.json

Floats are written with Python's repr (shortest round-trip form); the Rust side parses them with
serde_json's `float_roundtrip` feature, so every value arrives with the same bits.
"""

import json
import sys

import numpy as np

SEED = 20260203
# Fixed percentiles asked of every array, plus a few random ones per array.
FIXED = [0.0, 1.0, 5.0, 10.0, 25.0, 33.3, 50.0, 66.7, 75.0, 90.0, 95.0, 99.0, 99.9, 100.0]


def draw(rng, kind, n):
    if kind == "uniform":
        return rng.uniform(-1.0, 1.0, n)
    if kind == "normal":
        return rng.normal(100.0, 15.0, n)
    if kind == "latency":  # heavy right tail, like job latencies in seconds
        return rng.lognormal(-3.0, 1.2, n)
    if kind == "integers":  # many ties
        return rng.integers(0, 20, n).astype(np.float64)
    if kind == "wide":  # magnitudes from 1e-30 to 1e30, both signs
        return rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(-30.0, 30.0, n)
    if kind == "sorted":
        return np.sort(rng.normal(0.0, 1.0, n))
    if kind == "reversed":
        return np.sort(rng.normal(0.0, 1.0, n))[::-1].copy()
    raise ValueError(kind)


def case(rng, name, values):
    n = len(values)
    percentiles = FIXED + [float(p) for p in rng.uniform(0.0, 100.0, 4)]
    # A random suffix, to check windows that cover only the newest samples.
    tail = int(rng.integers(1, n + 1))
    tail_values = values[n - tail:]
    return {
        "name": name,
        "values": [float(v) for v in values],
        "percentiles": percentiles,
        # Python floats as q: the way the seed called np.percentile.
        "expected": [float(np.percentile(values, p)) for p in percentiles],
        "mean": float(np.mean(values)),
        "tail": tail,
        "tail_expected": [float(np.percentile(tail_values, p)) for p in percentiles],
        "tail_mean": float(np.mean(tail_values)),
    }


def main():
    rng = np.random.default_rng(SEED)
    kinds = ["uniform", "normal", "latency", "integers", "wide", "sorted", "reversed"]
    cases = []
    # Every small size, where the index arithmetic has the most edge cases.
    for n in range(1, 41):
        kind = kinds[n % len(kinds)]
        cases.append(case(rng, f"{kind}-{n}", draw(rng, kind, n)))
    # Random sizes across the pairwise-summation block boundaries (8, 128, recursion).
    for i in range(100):
        kind = kinds[i % len(kinds)]
        n = int(rng.integers(41, 1000))
        cases.append(case(rng, f"{kind}-{n}-{i}", draw(rng, kind, n)))
    # A few large arrays (past numpy's 8192-element buffer size).
    for i, n in enumerate([8193, 20000]):
        kind = kinds[i % len(kinds)]
        cases.append(case(rng, f"{kind}-{n}-large", draw(rng, kind, n)))
    json.dump(
        {
            "generator": "tests/data/gen_percentiles.py",
            "numpy_version": np.__version__,
            "seed": SEED,
            "cases": cases,
        },
        sys.stdout,
        separators=(",", ":"),
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
