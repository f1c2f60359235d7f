"""Cost growth: service latency against record size, fitted to a line and to a power law."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.stats import fit_line, loglog_slope


def analyse(points: dict[int, float], log: Callable[[str], None]) -> dict[str, Any]:
    """points: record size -> service p50 (ms)."""
    sizes = sorted(points)
    latencies = [points[s] for s in sizes]
    slope, intercept, r2 = fit_line(sizes, latencies)
    exponent = loglog_slope(sizes, latencies)
    per_resource = {str(s): points[s] / s * 1000 for s in sizes}  # microseconds per resource
    log(
        f"  growth: {slope * 1000:.1f} us per resource (+{intercept:.2f} ms), r2 {r2:.4f}, "
        f"exponent {exponent:.2f} (1 = linear)"
    )
    return {
        "sizes": sizes,
        "p50_ms": latencies,
        "us_per_resource": per_resource,
        "slope_us_per_resource": slope * 1000,
        "intercept_ms": intercept,
        "r2": r2,
        "exponent": exponent,
    }
