"""`python -m bench` (`make bench`): every benchmark in one run, a table, and a results file.

Options: --quick (a smoke run of a few seconds), --load-seconds N, --skip inprocess,fetch,load.
Results go to bench/results/<time>-<host>.json and .md, with the machine they came from.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

from bench import fetch, growth, inprocess, load

RESULTS = Path(__file__).resolve().parent / "results"

# Record size -> (service/floor iterations, one naive run every k iterations). Sized to keep the
# whole run near four minutes on two cores; 300 and 3,000 only feed the growth fit.
SIZES = {100: (400, 8), 300: (150, 1000), 1000: (120, 6), 3000: (40, 1000), 10000: (25, 8)}
QUICK = {100: (20, 5), 1000: (10, 5), 10000: (3, 3)}
TARGETS = {
    "service/floor at 1,000": ("<=", 2.0),
    "service/floor at 10,000": ("<=", 2.0),
    "naive/service at 1,000": (">=", 20.0),
    "fetch/one search (4 searches)": ("<=", 1.3),
    "errors under load": ("<=", 0),
}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f"{pages / 2**30:.1f} GiB"
    except (ValueError, OSError):
        pass
    import gunicorn
    import orjson

    return {
        "host": socket.gethostname(),
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "orjson": orjson.__version__,
        "gunicorn": gunicorn.__version__,
        "load_average_at_start": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for a smoke test")
    parser.add_argument("--load-seconds", type=int, default=60)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--skip", default="", help="comma-separated: inprocess,fetch,load")
    parser.add_argument("--no-save", action="store_true", help="print only; write no results")
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.monotonic()
    results: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "quick": args.quick,
    }
    if "inprocess" not in skip:
        log("in-process latency (floor, service, naive interleaved)...")
        results["inprocess"] = inprocess.run(QUICK if args.quick else SIZES, log)
        points = {int(k): v["service"]["p50"] for k, v in results["inprocess"].items()}
        results["growth"] = growth.analyse(points, log)
    if "fetch" not in skip:
        log("FHIR-fetch mode (100 ms per search)...")
        results["fetch"] = fetch.run(1000, 0.1, 3 if args.quick else 15, log)
    if "load" not in skip:
        seconds = 5 if args.quick else args.load_seconds
        log(f"load over loopback ({seconds} s)...")
        results["load"] = load.run(100, seconds, args.connections, None, log)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["seconds"] = time.monotonic() - started
    results["targets"] = targets(results)

    table = render(results)
    print(table)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = RESULTS / f"{stamp}-{results['machine']['host']}"
        base.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
        base.with_suffix(".md").write_text(table + "\n")
        log(f"results: {base}.json, {base}.md")
    return 0


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    inproc = results.get("inprocess", {})
    reached: dict[str, float | None] = {
        "service/floor at 1,000": inproc.get("1000", {}).get("service_over_floor"),
        "service/floor at 10,000": inproc.get("10000", {}).get("service_over_floor"),
        "naive/service at 1,000": inproc.get("1000", {}).get("naive_over_service"),
        "fetch/one search (4 searches)": results.get("fetch", {}).get("service_over_single"),
        "errors under load": results.get("load", {}).get("errors"),
    }
    rows = []
    for name, (op, goal) in TARGETS.items():
        value = reached[name]
        met = None if value is None else (value <= goal if op == "<=" else value >= goal)
        rows.append({"target": name, "goal": f"{op} {goal:g}", "reached": value, "met": met})
    return rows


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, {m['os']}, Python "
        f"{m['python']}, orjson {m['orjson']}, gunicorn {m['gunicorn']}; load average "
        f"{_load(m['load_average_at_start'])} at start, {_load(m['load_average_at_end'])} at end"
        f" ({results['when']}, {results['seconds']:.0f} s)",
        "",
    ]
    if inproc := results.get("inprocess"):
        lines += [
            "In-process order-select call (ms; p50 / p95 / p99; n samples)",
            "",
            "| resources | body | floor json.loads | service | naive (models) "
            "| service/floor | naive/service |",
            "|---:|---:|---|---|---|---:|---:|",
        ]
        for size, row in inproc.items():
            lines.append(
                f"| {int(size):,} | {row['bytes'] / 1e6:.2f} MB | {_pct(row['floor'])} "
                f"| {_pct(row['service'])} | {_pct(row['naive'])} "
                f"| {row['service_over_floor']:.2f} | {row['naive_over_service']:.1f} |"
            )
        lines.append("")
    if g := results.get("growth"):
        per = ", ".join(f"{int(s):,}: {v:.1f}" for s, v in g["us_per_resource"].items())
        lines += [
            f"Growth: {g['slope_us_per_resource']:.1f} us per resource + "
            f"{g['intercept_ms']:.2f} ms (r2 {g['r2']:.4f}); power-law exponent "
            f"{g['exponent']:.2f} (1 = linear); us per resource by size: {per}",
            "",
        ]
    if f := results.get("fetch"):
        singles = ", ".join(f"{k} {v['p50']:.1f}" for k, v in f["single"].items())
        lines += [
            f"FHIR-fetch mode ({f['size']:,} resources, {f['delay_ms']:.0f} ms added per "
            f"search, {f['searches']} searches): service p50 {f['service']['p50']:.1f} ms "
            f"(p95 {f['service']['p95']:.1f}); single searches p50 {singles} ms; slowest "
            f"{f['slowest_single_p50']:.1f}, sum {f['sum_single_p50']:.1f}; "
            f"service/slowest search {f['service_over_single']:.2f}",
            "",
        ]
    if ld := results.get("load"):
        lines += [
            f"Load ({ld['tool']}, {ld['seconds']} s, {ld['connections']} connections, "
            f"{ld['size']:,}-resource body of {ld['bytes'] / 1e3:.0f} kB, gunicorn "
            f"{ld['workers']} workers x {ld['threads']} threads): "
            f"{ld['requests_per_s']:.1f} requests/s, p50 {ld['p50']:.1f} ms, "
            f"p99 {ld['p99']:.1f} ms, max {ld['max']:.1f} ms, errors {ld['errors']} "
            f"of {ld['requests']:,}",
            "",
        ]
    lines += ["| target | goal | reached | met |", "|---|---|---:|---|"]
    for row in results["targets"]:
        value = row["reached"]
        shown = "-" if value is None else f"{value:.2f}" if isinstance(value, float) else value
        met = {True: "yes", False: "NO", None: "not run"}[row["met"]]
        lines.append(f"| {row['target']} | {row['goal']} | {shown} | {met} |")
    return "\n".join(lines)


def _pct(s: dict[str, float]) -> str:
    return f"{s['p50']:.2f} / {s['p95']:.2f} / {s['p99']:.2f} (n={s['n']})"


def _load(values: Any) -> str:
    return " ".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    raise SystemExit(main())
