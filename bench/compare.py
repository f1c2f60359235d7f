"""Side by side with the HealthChain peer, 1 and 2 workers; and one body repeated (store growth).

* `side_by_side`: per worker count, our server and the peer, each driven for N seconds in all
  (alternating 5-second slices) at C connections with the same body (baclofen ordered, the
  28 kB templated record, the drafts also in the medications prefetch because the peer cannot
  see draftOrders): requests/s, p50/p99, errors, and ours/peer.
* `repeated`: one body sent again and again (an EHR re-sending an order-select), in ten blocks
  of equal duration, sized from a short calibration run so that each holds about a tenth of
  the calls asked for: requests/s of each block (issue 16: the first and the tenth must be
  within 10%: throughput must not fall as the audit store grows) and the resident memory of
  each worker after each block (no growth between the first and the last block). (wrk runs
  for a duration; it has no "stop after N requests".)
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from bench import fixtures, inprocess, load


def _peer_body() -> bytes:
    return fixtures.per_call(json.dumps(fixtures.peer_request()).encode(), 1)


def side_by_side(
    worker_counts: tuple[int, ...],
    seconds: int,
    connections: int,
    log: Callable[[str], None],
    slice_seconds: int = 5,
) -> dict[str, Any]:
    """Both servers up at once, driven in alternating slices (ours, peer, peer, ours, ...) so
    that a shared machine's changing load falls on both alike; `seconds` each in all."""
    raw = _peer_body()
    python = load.peer_python(log)
    rounds = max(1, seconds // slice_seconds)
    piece = max(1, seconds // rounds)
    out: dict[str, Any] = {
        "bytes": len(raw),
        "connections": connections,
        "seconds": piece * rounds,
        "slices": rounds,
    }
    with tempfile.TemporaryDirectory(prefix="cds-bench-peer-") as tmp:
        work = Path(tmp)
        body = work / "body.json"
        body.write_bytes(raw)
        runs: dict[str, Any] = {}
        call = _inprocess_caller(work / "inprocess")
        for index, workers in enumerate(worker_counts):
            # With the first worker count, also where our CPU goes: the server alone and the
            # same body called in process, in the same rotation.
            breakdown = index == 0
            with (
                load.ours(workers, work / f"ours-{workers}", raw) as ours,
                load.peer(workers, work / f"peer-{workers}", raw, python) as peer,
                load.server_alone(workers, work / f"alone-{workers}", raw)
                if breakdown
                else nullcontext() as alone,
            ):
                # Under load every answer must still carry the dopamine-antagonist card.
                ours.marker, peer.marker = OURS_MARKER, PEER_MARKER
                servers = [ours, peer, *([alone] if alone else [])]
                slices: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
                in_process: list[dict[str, Any]] = []
                for n in range(rounds):
                    for server in servers if n % 2 == 0 else servers[::-1]:
                        slices[server.name].append(load.drive(server, body, connections, piece))
                    if breakdown:
                        in_process.append(inprocess.cpu_per_call(call, raw, piece))
                row: dict[str, Any] = {
                    "ours_cards": _cards(load.answer(ours, raw), OURS_EXPECTED, "ours"),
                    "peer_cards": _cards(load.answer(peer, raw), PEER_EXPECTED, "peer"),
                    "ours": _combine(slices["ours"]),
                    "peer": _combine(slices["peer"]),
                }
                if alone:
                    row["alone"] = _combine(slices["alone"])
                    row["inprocess"] = _combine_inprocess(in_process)
            row["ratio"] = row["ours"]["requests_per_s"] / row["peer"]["requests_per_s"]
            runs[str(workers)] = row
            log(
                f"  {workers} worker(s): ours {_brief(row['ours'])}; peer {_brief(row['peer'])}; "
                f"ours/peer {row['ratio']:.2f}"
            )
            if breakdown:
                log(
                    f"  CPU per request: ours {row['ours']['cpu_ms_per_request']:.2f} ms over "
                    f"HTTP, {row['inprocess']['cpu_ms_per_call']:.2f} ms called in process, "
                    f"server alone {row['alone']['cpu_ms_per_request']:.3f} ms; peer "
                    f"{row['peer']['cpu_ms_per_request']:.2f} ms"
                )
        out["runs"] = runs
    return out


def _inprocess_caller(folder: Path) -> Callable[[bytes], dict[str, Any]]:
    """Our app called as gunicorn calls it, in this process (production GC settings)."""
    folder.mkdir(parents=True, exist_ok=True)
    call = inprocess.wsgi_caller(inprocess.make_app(str(folder)))
    inprocess.tune_gc()
    return call


def _combine_inprocess(slices: list[dict[str, Any]]) -> dict[str, Any]:
    calls = sum(s["calls"] for s in slices)
    return {
        "calls": calls,
        "cpu_ms_per_call": 1000 * sum(s["cpu_seconds"] for s in slices) / calls,
        "p50": statistics.median(s["wall"]["p50"] for s in slices),
    }


# The two warnings both services must give on the side-by-side body (words of each card's
# summary): the stroke indication, and baclofen with a dopamine antagonist (haloperidol).
OURS_EXPECTED = (("efficacy not established",), ("haloperidol", "paradoxical"))
PEER_EXPECTED = (("efficacy not established",), ("dopamine antagonist",))
OURS_MARKER, PEER_MARKER = (
    "paradoxical reactions",
    "dopamine antagonist",
)  # as the answers spell them


def _cards(answer: dict[str, Any], expected: tuple[tuple[str, ...], ...], name: str) -> list[str]:
    """The card summaries of an answer; each expected card present, or the comparison stops
    (a server that answers fast with the wrong cards is not doing the same work)."""
    summaries = [str(card.get("summary", "")) for card in answer.get("cards", [])]
    for words in expected:
        if not any(all(w in s.lower() for w in words) for s in summaries):
            raise RuntimeError(
                f"{name} gave no card with {words} on the side-by-side body: {summaries}"
            )
    return summaries


def _combine(slices: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several slices: requests/s over the whole time, the median slice p50,
    the worst slice p99 and max (percentiles of slices cannot be merged exactly)."""
    requests = sum(s["requests"] for s in slices)
    busy = sum(s["requests"] / s["requests_per_s"] for s in slices if s["requests_per_s"])
    return {
        "tool": slices[0]["tool"],
        "requests": requests,
        "requests_per_s": requests / busy if busy else 0.0,
        "p50": statistics.median(s["p50"] for s in slices),
        "p99": max(s["p99"] for s in slices),
        "max": max(s["max"] for s in slices),
        "errors": sum(s["errors"] for s in slices),
        "cpu_ms_per_request": 1000 * sum(s["cpu_seconds"] for s in slices) / requests
        if requests
        else 0.0,
        "slices_requests_per_s": [s["requests_per_s"] for s in slices],
        "workers": slices[0]["workers"],
    }


def repeated(
    workers: int, calls: int, connections: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """About `calls` calls of one body in ten blocks; requests/s and worker memory per block."""
    raw = fixtures.per_call(json.dumps(fixtures.baclofen_request()).encode(), 1)
    block = max(1, calls // 10)
    blocks = []
    with tempfile.TemporaryDirectory(prefix="cds-bench-repeat-") as tmp:
        work = Path(tmp)
        body = work / "body.json"
        body.write_bytes(raw)
        with load.ours(workers, work / "ours", raw) as server:
            calibration = load.drive(server, body, connections, 3)
            seconds = max(2, round(block / calibration["requests_per_s"]))
            log(
                f"  calibration: {calibration['requests_per_s']:.0f} req/s: ten blocks of "
                f"{seconds} s"
            )
            rss_start = load.worker_rss(server)
            done = calibration["requests"]
            for n in range(10):
                result = load.drive(server, body, connections, seconds)
                done += result["requests"]
                result["calls_so_far"] = done
                result["rss_mib"] = load.worker_rss(server)
                blocks.append(result)
                log(
                    f"  block {n + 1}/10: {_brief(result)}, {done:,} calls so far, worker "
                    f"RSS {_rss(result['rss_mib'])} MiB"
                )
            database = work / "ours" / "var"
            store_bytes = sum(p.stat().st_size for p in database.glob("*") if p.is_file())
    first, last = blocks[0], blocks[-1]
    return {
        "workers": workers,
        "connections": connections,
        "block": block,
        "block_seconds": seconds,
        "calls": sum(b["requests"] for b in blocks),
        "bytes": len(raw),
        "blocks": blocks,
        "first_over_last": first["requests_per_s"] / last["requests_per_s"],
        "last_over_first": last["requests_per_s"] / first["requests_per_s"],
        "rss_start_mib": rss_start,
        "rss_first_block_mib": first["rss_mib"],
        "rss_last_block_mib": last["rss_mib"],
        "store_bytes": store_bytes,
        "errors": sum(b["errors"] for b in blocks),
    }


def _brief(result: dict[str, Any]) -> str:
    return (
        f"{result['requests_per_s']:.1f} req/s, p50 {result['p50']:.1f} ms, p99 "
        f"{result['p99']:.1f} ms, {result['errors']} errors"
    )


def _rss(values: dict[int, float]) -> str:
    return " / ".join(f"{v:.1f}" for v in values.values())
