"""`python -m bench` (`make bench`): every benchmark in one run, a table, and a results file.

Sections: inprocess (fixed cost per call and record-size growth), fetch (FHIR-fetch mode), peer
(side by side with the HealthChain peer, 1 and 2 workers), repeat (one body repeated: throughput
and worker memory as the store grows). Options: --quick (a smoke run), --skip SECTION,...,
--load-seconds N, --connections N, --workers 2,1, --repeat-calls N, --small N.
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

from bench import compare, fetch, growth, inprocess

RESULTS = Path(__file__).resolve().parent / "results"

# Record size -> (iterations, one naive run every k iterations). Sized to keep the whole run
# near eight minutes on two cores; 300 and 3,000 only feed the growth fit.
SIZES = {100: (300, 8), 300: (100, 1000), 1000: (80, 8), 3000: (25, 1000), 10000: (15, 5)}
QUICK = {100: (20, 5), 1000: (10, 5), 10000: (3, 3)}
SMALL, QUICK_SMALL = 1000, 50  # iterations of each 28 kB templated case
TARGETS = {
    "service/floor, unrelated order (28 kB)": ("<=", 5.0),
    "service/floor, baclofen order (28 kB)": ("<=", 8.0),
    "service/floor at 1,000": ("<=", 2.5),
    "service/floor at 10,000": ("<=", 2.0),
    "fetch/slowest single search": ("<=", 1.3),
    "ours/peer requests/s (2 workers)": (">=", 3.0),
    "p99 at 8 connections (ms, 2 workers)": ("<=", 50.0),
    "errors under load": ("<=", 0),
    "tenth/first block requests/s (repeated body)": (">=", 0.9),
    "worker memory last/first block": ("<=", 1.05),
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
    parser.add_argument("--quick", action="store_true", help="a smoke run of a minute or so")
    parser.add_argument("--load-seconds", type=int, default=20, help="per server and worker count")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", default="2,1", help="worker counts side by side (2,1)")
    parser.add_argument(
        "--repeat-calls",
        type=int,
        default=20_000,
        help="calls of the repeated body, in ten blocks (issue 16 asks 100,000: slow)",
    )
    parser.add_argument("--small", type=int, default=None, help="iterations per 28 kB case")
    parser.add_argument("--skip", default="", help="comma-separated: inprocess,fetch,peer,repeat")
    parser.add_argument("--no-save", action="store_true", help="print only; write no results")
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    worker_counts = tuple(int(w) for w in args.workers.split(",") if w.strip())

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.monotonic()
    results: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "quick": args.quick,
        "argv": sys.argv[1:] if argv is None else argv,
    }
    if "inprocess" not in skip:
        log("in-process cost per call (floor, service, naive interleaved)...")
        small = args.small or (QUICK_SMALL if args.quick else SMALL)
        results["inprocess"] = inprocess.run(QUICK if args.quick else SIZES, small, log)
        points = {
            int(k): v["service"]["p50"] for k, v in results["inprocess"].items() if k.isdigit()
        }
        results["growth"] = growth.analyse(points, log)
    if "fetch" not in skip:
        log("FHIR-fetch mode (100 ms per search)...")
        results["fetch"] = fetch.run(1000, 0.1, 3 if args.quick else 15, log)
    if "peer" not in skip:
        seconds = 3 if args.quick else args.load_seconds
        log(f"side by side with the HealthChain peer ({seconds} s each)...")
        results["peer"] = compare.side_by_side(worker_counts, seconds, args.connections, log)
    if "repeat" not in skip:
        calls = 1000 if args.quick else args.repeat_calls
        log(f"one body repeated: {calls:,} calls in ten blocks...")
        results["repeat"] = compare.repeated(max(worker_counts), calls, args.connections, log)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["seconds"] = time.monotonic() - started
    results["targets"] = targets(results)

    base = RESULTS / f"{dt.datetime.now():%Y%m%d-%H%M%S}-{results['machine']['host']}"
    if not args.no_save:  # the numbers first: a rendering slip must not lose a long run
        RESULTS.mkdir(exist_ok=True)
        base.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    table = render(results)
    print(table)
    if not args.no_save:
        base.with_suffix(".md").write_text(table + "\n")
        log(f"results: {base}.json, {base}.md")
    return 0


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    inproc = results.get("inprocess", {})
    peer_runs = results.get("peer", {}).get("runs", {})
    two = peer_runs.get("2") or (next(iter(peer_runs.values())) if peer_runs else {})
    repeat = results.get("repeat", {})
    errors = [r["ours"]["errors"] for r in peer_runs.values()]  # ours: the peer's are shown
    if repeat:
        errors.append(repeat["errors"])
    memory = None
    if repeat:
        first, last = repeat["rss_first_block_mib"], repeat["rss_last_block_mib"]
        memory = max(last[p] / first[p] for p in first if p in last) if first else None
    reached: dict[str, float | None] = {
        "service/floor, unrelated order (28 kB)": inproc.get("unrelated", {}).get(
            "service_over_floor"
        ),
        "service/floor, baclofen order (28 kB)": inproc.get("baclofen", {}).get(
            "service_over_floor"
        ),
        "service/floor at 1,000": inproc.get("1000", {}).get("service_over_floor"),
        "service/floor at 10,000": inproc.get("10000", {}).get("service_over_floor"),
        "fetch/slowest single search": results.get("fetch", {}).get("service_over_single"),
        "ours/peer requests/s (2 workers)": two.get("ratio"),
        "p99 at 8 connections (ms, 2 workers)": (two.get("ours") or {}).get("p99"),
        "errors under load": sum(errors) if errors else None,
        "tenth/first block requests/s (repeated body)": repeat.get("last_over_first"),
        "worker memory last/first block": memory,
    }
    rows = []
    for name, (op, goal) in TARGETS.items():
        value = reached[name]
        met = None if value is None else (value <= goal if op == "<=" else value >= goal)
        rows.append({"target": name, "goal": f"{op} {goal:g}", "reached": value, "met": met})
    return rows


LABELS = {
    "unrelated": "lisinopril (no rule), 100-resource record via the templates",
    "baclofen": "baclofen + haloperidol (cards), same record via the templates",
}


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
            "In-process order-select call, WSGI as gunicorn calls it, a new hookInstance and "
            "patient each call (ms; p50 / p95 / p99; n samples)",
            "",
            "| case | body | floor json.loads | service | service/floor | goal | naive (models) "
            "| naive/service |",
            "|---|---:|---|---|---:|---:|---|---:|",
        ]
        for name, row in inproc.items():
            label = LABELS.get(name) or f"{int(name):,} resources, all in the prefetch"
            naive = _pct(row["naive"]) if row["naive"] else "-"
            ratio = f"{row['naive_over_service']:.1f}" if row["naive_over_service"] else "-"
            goal = f"<= {row['goal']:g}" if row.get("goal") else "-"
            lines.append(
                f"| {label} | {row['bytes'] / 1e3:,.1f} kB | {_pct(row['floor'])} "
                f"| {_pct(row['service'])} | {row['service_over_floor']:.2f} | {goal} "
                f"| {naive} | {ratio} |"
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
    if p := results.get("peer"):
        tool = next(iter(p["runs"].values()))["ours"]["tool"] if p["runs"] else "-"
        lines += [
            f"Side by side over loopback ({tool}, {p['connections']} connections, "
            f"{p['seconds']} s each in {p['slices']} alternating slices, p99 the worst slice's; "
            f"the same {p['bytes'] / 1e3:.1f} kB baclofen body; ours: "
            "gunicorn gthread, SQLite audit; peer: HealthChain 0.16.1 on uvicorn, TCP_NODELAY "
            "as with 1 worker; CPU: the server's processes' CPU time per request)",
            "",
            "| workers | ours req/s | ours p50 / p99 ms | ours CPU ms/req | peer req/s "
            "| peer p50 / p99 ms | peer CPU ms/req | ours/peer | errors ours / peer |",
            "|---:|---:|---|---:|---:|---|---:|---:|---|",
        ]
        for workers, row in p["runs"].items():
            o, q = row["ours"], row["peer"]
            lines.append(
                f"| {workers} | {o['requests_per_s']:.1f} | {o['p50']:.1f} / {o['p99']:.1f} "
                f"| {o.get('cpu_ms_per_request', 0):.2f} "
                f"| {q['requests_per_s']:.1f} | {q['p50']:.1f} / {q['p99']:.1f} "
                f"| {q.get('cpu_ms_per_request', 0):.2f} "
                f"| {row['ratio']:.2f} | {o['errors']} / {q['errors']} |"
            )
        first = next(iter(p["runs"].values()), None)
        if first and first.get("alone") and first.get("inprocess"):
            workers = next(iter(p["runs"]))
            http = first["ours"]["cpu_ms_per_request"]
            called = first["inprocess"]["cpu_ms_per_call"]
            alone = first["alone"]["cpu_ms_per_request"]
            peer_cpu = first["peer"]["cpu_ms_per_request"]
            lines += [
                "",
                f"Where our CPU per request goes ({workers} workers, the same slices): over HTTP "
                f"{http:.2f} ms; the same body called in process (WSGI, one thread) "
                f"{called:.2f} ms CPU per call (p50 {first['inprocess']['p50']:.2f} ms); the "
                f"server alone (gunicorn with our settings around an app that only reads the "
                f"body, bench/server_alone.py) {alone:.3f} ms at "
                f"{first['alone']['requests_per_s']:.0f} req/s; the rest (threads, sockets, "
                f"the GIL shared by a worker's threads) {http - called - alone:.2f} ms. The "
                f"peer: {peer_cpu:.2f} ms; 3x its requests/s on the same cores needs about "
                f"{peer_cpu / 3:.2f} ms per request.",
            ]
        if first and isinstance(first.get("ours_cards"), list):
            lines += [
                "",
                f"Cards on that body: ours {len(first['ours_cards'])} "
                f"({'; '.join(first['ours_cards'])}); peer {len(first['peer_cards'])} "
                f"({'; '.join(first['peer_cards'])})",
            ]
        lines.append("")
    if r := results.get("repeat"):
        rates = ", ".join(f"{b['requests_per_s']:.0f}" for b in r["blocks"])
        first, last = r["rss_first_block_mib"], r["rss_last_block_mib"]
        memory = "; ".join(
            f"worker {n + 1}: {first[p]:.1f} -> {last.get(p, float('nan')):.1f} MiB"
            for n, p in enumerate(first)
        )
        lines += [
            f"One body repeated ({r['calls']:,} calls of {r['bytes'] / 1e3:.1f} kB, "
            f"{r['workers']} workers, {r['connections']} connections, ten blocks of "
            f"{r['block_seconds']} s, about {r['block']:,} calls each): requests/s per block "
            f"{rates}; tenth/first "
            f"{r['last_over_first']:.2f}; errors {r['errors']}; store on disk "
            f"{r['store_bytes'] / 1e6:.1f} MB at the end",
            "",
            f"Resident memory per worker after the first and the last block ({memory})",
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
