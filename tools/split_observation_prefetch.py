"""Rewrite fixture prefetches from the old single `observations` key to one key per data need.

The service's Observation templates are one search per need (renal, coagulation, liver, weight,
pregnancy: `services.OBSERVATION_SEARCHES`). A fixture written for the old single search keeps
its data; this moves each Observation to the key whose search would return it (by code) and drops
those no search asks for, exactly as an EHR fulfilling the new templates would answer:

    .venv/bin/python -m tools.split_observation_prefetch [fhir_fixtures/<scenario> ...]

With no argument, every `fhir_fixtures/*/request.json` is rewritten in place; files already
split are left unchanged. The key order is discovery's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cds_hooks.knowledge import Knowledge
from cds_hooks.services import OBSERVATION_SEARCHES, PURPOSES, observation_key

REPO = Path(__file__).resolve().parent.parent


def split(prefetch: dict[str, Any], knowledge: Knowledge) -> dict[str, Any]:
    """The prefetch with `observations` replaced by the per-need keys (a copy)."""
    if "observations" not in prefetch:
        return prefetch
    old = prefetch["observations"]
    out: dict[str, Any] = {}
    if old is None or old.get("resourceType") != "Bundle":
        split_values: dict[str, Any] = {s.key: old for s in OBSERVATION_SEARCHES}
    else:
        entries: dict[str, list] = {s.key: [] for s in OBSERVATION_SEARCHES}
        for entry in old.get("entry", []):
            resource = entry.get("resource", {})
            if key := observation_key(knowledge, resource):
                entries[key].append(entry)
        split_values = {}
        for key, kept in entries.items():
            bundle = {k: v for k, v in old.items() if k not in ("entry", "total", "link")}
            bundle["total"] = len(kept)
            if kept:
                bundle["entry"] = kept
            split_values[key] = bundle
    for key in PURPOSES:
        if key in split_values:
            out[key] = split_values[key]
        elif key in prefetch:
            out[key] = prefetch[key]
    out.update({k: v for k, v in prefetch.items() if k not in out and k != "observations"})
    return out


def main(argv: list[str]) -> int:
    knowledge = Knowledge.load()
    folders = [Path(a) for a in argv] or sorted(
        p.parent for p in (REPO / "fhir_fixtures").glob("*/request.json")
    )
    changed = 0
    for folder in folders:
        path = folder / "request.json"
        request = json.loads(path.read_text(encoding="utf-8"))
        if "observations" not in (request.get("prefetch") or {}):
            continue
        request["prefetch"] = split(request["prefetch"], knowledge)
        path.write_text(json.dumps(request, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        changed += 1
    print(f"{changed} of {len(folders)} fixture(s) rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
