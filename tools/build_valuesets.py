"""Build FHIR R4 ValueSet JSON files from the shared terminology research (codes.json, groups.json).

Run by developers when the shared terminology changes, never at service start:

    .venv/bin/python tools/build_valuesets.py [TERMINOLOGY_DIR] [--out DIR]

TERMINOLOGY_DIR defaults to ``<repo>/../shared/terminology``; the output defaults to
``cds_hooks/knowledge/valuesets``. The output is deterministic (sorted keys, codes sorted by
system then code, fixed dates) so that re-running on unchanged input gives byte-identical files
and a clean ``git diff``. Every ValueSet is validated with fhir.resources (R4B models) before it
is written; the service itself reads the files as plain JSON.

Curated changes live in ``tools/valueset_additions.json``, one object per key: ``entries`` adds a
key the research lacks (or, with ``"extend": true``, appends to one), ``group`` defines a drug group
the research lacks (``members`` and ``atc_class_prefixes``, as in groups.json), and ``exclude``
drops codes after clinical review, and ``note`` (on any key) says why a curated key exists; it is
written into the ValueSet description. ``exclude`` is a list of rules, each with a ``why`` and one
or more selectors: ``codes`` (exact codes), ``display_pattern`` (a regular expression searched in
the display) and ``tty`` (RxNorm term types); a plain list of codes with a key-level ``why`` is also
accepted. Exclusions apply after entries are added, every rule must remove something, and the reason
and the removed codes are written into the ValueSet description (and the description of any drug
group the key is a member of).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TERMINOLOGY = Path(__file__).resolve().parents[2] / "shared" / "terminology"
DEFAULT_OUT = REPO / "cds_hooks" / "knowledge" / "valuesets"

CANONICAL_BASE = "http://antispasticity-cds.org/fhir"
VS_BASE = f"{CANONICAL_BASE}/ValueSet/"
EXT_BASE = f"{CANONICAL_BASE}/StructureDefinition/"
EXT_SOURCE = EXT_BASE + "code-source"
EXT_MATCH = EXT_BASE + "code-match"
EXT_TTY = EXT_BASE + "rxnorm-tty"
EXT_NOTE = EXT_BASE + "code-note"
EXT_GROUP_MEMBERS = EXT_BASE + "group-members"
EXT_CURATED_OUT = EXT_BASE + "curated-exclusion"
EXT_TEXT_NAME = EXT_BASE + "condition-text-name"

ATC = "http://www.whocc.no/atc"
VERSION = "1.0.0"
PUBLISHER = "cds-hooks-antispasticity project"
# Fixed (not "now") so that the build is reproducible; bump together with VERSION.
DATE = "2026-11-21"
TIMESTAMP = f"{DATE}T00:00:00Z"

INCLUDED_PREFIXES = ("drug/", "drug-group/", "condition/", "observation/", "route/")
# Ingredient term types. codes.json also lists the ingredient (e.g. baclofen IN 1292) inside the
# form subsets (drug/baclofen-oral, drug/baclofen-intrathecal, drug/tizanidine-oral). An
# ingredient code does not say which form was ordered, so keeping it there would make every
# ingredient-coded order look both oral and intrathecal; the subsets keep products and brands.
INGREDIENT_TTYS = frozenset({"IN", "PIN", "MIN"})

# Titles that the "key tail, hyphens to spaces, first letter upper" rule gets wrong.
TITLES: dict[str, str] = {
    "drug/baclofen-intrathecal": "Baclofen, intrathecal products",
    "drug/baclofen-oral": "Baclofen, oral products",
    "drug/tizanidine-oral": "Tizanidine, oral products",
    "drug-group/alpha2-agonists": "Alpha-2 adrenergic agonists",
    "drug-group/antiemetic-dopamine-antagonists": "Antiemetic dopamine antagonists",
    "drug-group/antiplatelets-p2y12-thienopyridine": "P2Y12 inhibitor antiplatelets",
    "drug-group/antipsychotics-atypical": "Atypical antipsychotics",
    "drug-group/antipsychotics-typical": "Typical antipsychotics",
    "drug-group/antispastic-agents": "Antispastic agents (baclofen, tizanidine)",
    "drug-group/cyp1a2-inhibitors-other-caution-with-tizanidine": (
        "Other CYP1A2 inhibitors (caution with tizanidine)"
    ),
    "drug-group/cyp1a2-inhibitors-strong-contraindicated-with-tizanidine": (
        "Strong CYP1A2 inhibitors (contraindicated with tizanidine)"
    ),
    "drug-group/dopamine-antagonists-all": "Dopamine antagonists (all)",
    "drug-group/ecqm-anticoagulants-for-all-indications": (
        "Anticoagulants for all indications (eCQM)"
    ),
    "drug-group/ecqm-antihypertensives": "Antihypertensives (eCQM)",
    "drug-group/ecqm-contraceptive-medications": "Contraceptive medications (eCQM)",
    "drug-group/ecqm-potentially-harmful-antipsychotics-older-adults": (
        "Potentially harmful antipsychotics in older adults (eCQM)"
    ),
    "condition/acute-kidney-injury-renal-failure": "Acute kidney injury (acute kidney failure)",
    "condition/cns-infection-meningitis-epidural-abscess": (
        "CNS infection (meningitis, epidural abscess)"
    ),
    "condition/coagulopathy-bleeding-disorder": "Coagulopathy / bleeding disorder",
    "condition/epilepsy-seizure-disorder": "Epilepsy / seizure disorder",
    "condition/hemiplegia-paraplegia-paralytic": "Hemiplegia, paraplegia and paralytic syndromes",
    "condition/low-back-pain-muscle-spasm": "Low back pain / muscle spasm",
    "condition/parkinsonism-secondary-drug-induced": "Secondary (drug-induced) parkinsonism",
    "condition/parkinsons-disease": "Parkinson's disease",
    "condition/schizophrenia-psychotic-disorder": "Schizophrenia / psychotic disorder",
    "condition/scoliosis-severe-spinal-deformity": "Scoliosis / severe spinal deformity",
    "condition/sepsis-bacteremia": "Sepsis / bacteremia",
    "condition/skin-soft-tissue-infection-back-lumbar": "Skin or soft-tissue infection of the back",
    "condition/stroke-cerebrovascular": "Stroke / cerebrovascular disease",
    "observation/alt": "Alanine aminotransferase (ALT)",
    "observation/ast": "Aspartate aminotransferase (AST)",
    "observation/bilirubin-total-supporting": "Total bilirubin",
    "observation/egfr": "Estimated glomerular filtration rate (eGFR)",
    "observation/inr": "INR (international normalized ratio)",
    "route/epidural": "Epidural route",
    "route/intramuscular": "Intramuscular route",
    "route/intrathecal": "Intrathecal route",
    "route/intravenous": "Intravenous route",
    "route/oral": "Oral route",
    "route/root-hierarchy": "Route of administration (hierarchy root)",
    "route/subcutaneous": "Subcutaneous route",
}

# Said once in every description: where the codes came from (shared/terminology/README.md).
PROVENANCE = (
    "Codes come from the project's terminology research (shared/terminology/README.md, "
    "codes.json, sources.json), collected from public repositories; no live terminology server "
    "was queried. RxNorm products from an NLM RxNorm RRF-derived ingredient tree "
    "(davidanderson3/rxnorm-ingredients, Nov 2025) cross-checked against VSAC eCQM value sets; "
    "ATC from the WHO ATC/DDD index (fabkury/atcd); SNOMED CT from HL7 Switzerland "
    "(hl7ch/ch-term), OHDSI PhenotypeLibrary roots and VSAC value sets; ICD-10-CM from VSAC value "
    "sets, the FY2017 "
    "list and FY2018-FY2027 change files; LOINC from VSAC lab value sets and HL7 IG artefacts. "
    "Each code carries its exact source in the code-source extension; 'unverified' means it came "
    "from memory or an unattributed search hit."
)


def title_for(key: str) -> str:
    if key in TITLES:
        return TITLES[key]
    added = json.loads(ADDITIONS.read_text(encoding="utf-8")).get(key)
    if added and "title" in added:
        return added["title"]
    tail = key.split("/", 1)[1].replace("-", " ")
    return tail[:1].upper() + tail[1:]


def name_for(key: str) -> str:
    # FHIR `name` must be machine-friendly ([A-Z][A-Za-z0-9_]*).
    parts = key.replace("/", "-").split("-")
    return "".join(p[:1].upper() + p[1:] for p in parts if p)


def file_name(key: str) -> str:
    return key.replace("/", ".") + ".json"


def _contains_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    extensions: list[dict[str, str]] = [{"url": EXT_SOURCE, "valueString": entry["source"]}]
    if entry.get("match"):
        extensions.append({"url": EXT_MATCH, "valueCode": entry["match"]})
    if entry.get("tty"):
        extensions.append({"url": EXT_TTY, "valueCode": entry["tty"]})
    if entry.get("note"):
        extensions.append({"url": EXT_NOTE, "valueString": entry["note"]})
    return {
        "extension": extensions,
        "system": entry["system"],
        "code": entry["code"].strip(),
        "display": entry["display"],
    }


def _merge(entries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (system, code); a later `match` flag wins so class prefixes stay prefixes."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in entries:
        k = (entry["system"], entry["code"].strip())
        if k in merged:
            if entry.get("match") and not merged[k].get("match"):
                merged[k] = {**merged[k], "match": entry["match"]}
            continue
        merged[k] = dict(entry)
    return [merged[k] for k in sorted(merged)]


def form_subset_of(key: str, keys: Iterable[str]) -> str | None:
    """drug/baclofen-oral -> drug/baclofen: a drug key that extends another drug key is a subset."""
    if not key.startswith("drug/"):
        return None
    return next(
        (k for k in sorted(keys) if k.startswith("drug/") and key.startswith(k + "-")), None
    )


def _group_entries(
    key: str, group: Mapping[str, Any], codes: Mapping[str, Sequence[Mapping[str, Any]]]
) -> list[dict[str, Any]]:
    members = group.get("members", [])
    missing = [m for m in members if m not in codes]
    if missing:
        raise ValueError(f"{key}: unknown member keys {missing}")
    listed = {(e["system"], e["code"].strip()): e for e in codes.get(key, [])}
    union = [e for m in members for e in codes[m]]
    if group.get("filter") and listed:
        # The research already applied the documented filter to this group's own list (e.g.
        # oral-contraceptives drops IUDs, rings and patches); keep that narrowing.
        union = [e for e in union if (e["system"], e["code"].strip()) in listed]
    prefixes = []
    for prefix in group.get("atc_class_prefixes", []):
        known = listed.get((ATC, prefix))
        if known is None:
            known = next((e for e in union if (e["system"], e["code"]) == (ATC, prefix)), None)
        prefixes.append(
            {
                "system": ATC,
                "code": prefix,
                "display": known["display"] if known else f"ATC class {prefix}",
                "source": known["source"] if known else "groups.json",
                "match": "prefix",
                "note": "ATC class: match any ATC code starting with this value",
            }
        )
    return _merge([*union, *prefixes])


def _description(
    key: str,
    title: str,
    entries: Sequence[Mapping[str, Any]],
    group: Any,
    parent: str | None = None,
    exclusions: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    note: str | None = None,
) -> str:
    exclusions = exclusions or {}
    parts = [f"{title}. {PROVENANCE}"]
    if parent:
        parts.append(
            f"Form-specific subset of {parent}: products and brand names only. The ingredient "
            "code is left out because it does not identify the form; for an ingredient-coded "
            "order decide by dosageInstruction.route."
        )
    if group:
        parts.append(
            "Drug group: the union of the member drugs' codes (group-members extension) plus the "
            "ATC class prefixes " + ", ".join(group.get("atc_class_prefixes") or ["(none)"]) + "."
        )
        for field in ("note", "filter"):
            if group.get(field):
                parts.append(f"{field.capitalize()}: {group[field]}")
    prefix_count = sum(1 for e in entries if e.get("match") == "prefix")
    root_count = sum(1 for e in entries if e.get("match") == "descendant-or-self")
    if prefix_count:
        parts.append(f"Headings/classes matched by code prefix: {prefix_count}.")
    if root_count:
        parts.append(
            f"SNOMED CT hierarchy roots (descendant-or-self): {root_count}; their descendants are "
            "enumerated only partially."
        )
    unverified = sum(1 for e in entries if e.get("source") == "unverified")
    if unverified:
        parts.append(f"Unverified entries: {unverified}.")
    # Provenance of what the clinical review took out: the reason and the exact codes.
    for record in exclusions.get(key, ()):
        parts.append(
            f"Curated exclusion (tools/valueset_additions.json): {record['why']} "
            f"Codes removed: {', '.join(record['codes'])}."
        )
    if group:
        for member in group.get("members", []):
            removed = sum(len(r["codes"]) for r in exclusions.get(member, ()))
            if removed:
                parts.append(
                    f"Member {member} has {removed} codes removed by curated exclusions (see "
                    "that ValueSet); they are not in this group either."
                )
    if note:
        parts.append(f"Curation note (tools/valueset_additions.json): {note}")
    parts.append(f"Source key: {key}.")
    return " ".join(parts)


def build_valueset(
    key: str,
    codes: Mapping[str, Sequence[Mapping[str, Any]]],
    groups: Mapping[str, Mapping[str, Any]],
    exclusions: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    curated_out: Sequence[tuple[str, str, str]] = (),
    text_names: Sequence[str] = (),
    note: str | None = None,
) -> dict[str, Any]:
    group = groups.get(key)
    parent = form_subset_of(key, codes)
    if group:
        entries = _group_entries(key, group, codes)
    elif parent:
        entries = _merge(e for e in codes[key] if e.get("tty") not in INGREDIENT_TTYS)
    else:
        entries = _merge(codes[key])
    vs_id = key.replace("/", "-")
    title = title_for(key)
    vs: dict[str, Any] = {
        "resourceType": "ValueSet",
        "id": vs_id,
        "url": VS_BASE + vs_id,
        "version": VERSION,
        "name": name_for(key),
        "title": title,
        "status": "active",
        "date": DATE,
        "publisher": PUBLISHER,
        "description": _description(key, title, entries, group, parent, exclusions, note),
        "expansion": {
            "timestamp": TIMESTAMP,
            "total": len(entries),
            "contains": [_contains_entry(e) for e in entries],
        },
    }
    extensions = [
        {"url": EXT_GROUP_MEMBERS, "valueString": m} for m in (group or {}).get("members", [])
    ]
    # What the clinical review took out stays known to the matcher: a product curated out of
    # this key must not come back through the name fallback (clinical-rules.md, Round 2).
    extensions += [
        {"url": EXT_CURATED_OUT, "valueCoding": {"system": s, "code": c, "display": d}}
        for s, c, d in curated_out
    ]
    # Names that, in a Condition known only by its text, mean this condition (Round 2).
    extensions += [{"url": EXT_TEXT_NAME, "valueString": n} for n in text_names]
    if extensions:
        vs["extension"] = extensions
    return vs


def validate(vs: Mapping[str, Any]) -> None:
    # Imported here: only the build needs pydantic models; the service reads plain JSON.
    from fhir.resources.R4B.valueset import ValueSet

    ValueSet.model_validate(vs)


def dumps(vs: Mapping[str, Any]) -> str:
    return json.dumps(vs, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


ADDITIONS = Path(__file__).with_name("valueset_additions.json")


def build_all(terminology_dir: Path) -> dict[str, dict[str, Any]]:
    codes = json.loads((terminology_dir / "codes.json").read_text(encoding="utf-8"))
    groups = json.loads((terminology_dir / "groups.json").read_text(encoding="utf-8"))
    # Curated keys the rules need that the shared research does not have (provenance per code).
    additions = json.loads(ADDITIONS.read_text(encoding="utf-8"))
    exclusions: dict[str, list[dict[str, Any]]] = {}
    curated_out: dict[str, list[tuple[str, str, str]]] = {}
    text_names: dict[str, list[str]] = {}
    notes: dict[str, str] = {}
    for key, added in additions.items():
        if key.startswith("_"):
            continue
        if added.get("note"):
            notes[key] = added["note"]
        if added.get("text_names"):
            text_names[key] = list(added["text_names"])
        if added.get("extend"):
            codes[key] = [*codes[key], *added["entries"]]
        elif "entries" in added:
            codes.setdefault(key, added["entries"])
        if "group" in added:
            # A curated drug group (members are drug keys, shared or curated), like groups.json.
            if key in groups:
                raise ValueError(f"{key}: group already defined in groups.json")
            groups[key] = added["group"]
        # Exclusions apply last, so they can also drop codes a shared or curated list brings.
        if added.get("exclude"):
            before = codes[key]
            codes[key], exclusions[key] = apply_exclusions(key, before, added)
            kept = {(e["system"], e["code"].strip()) for e in codes[key]}
            curated_out[key] = sorted(
                {
                    (e["system"], e["code"].strip(), e["display"])
                    for e in before
                    if (e["system"], e["code"].strip()) not in kept
                },
                key=lambda c: c[:2],
            )
    keys = sorted(k for k in codes if k.startswith(INCLUDED_PREFIXES))
    keys += sorted(k for k in groups if k not in codes and k.startswith("drug-group/"))
    return {
        key: build_valueset(
            key,
            codes,
            groups,
            exclusions,
            curated_out.get(key, ()),
            text_names.get(key, ()),
            notes.get(key),
        )
        for key in sorted(keys)
    }


def _exclusion_rules(key: str, added: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The `exclude` list as rules; a plain list of codes is one rule with the key's `why`."""
    rules = added["exclude"]
    if all(isinstance(r, str) for r in rules):
        rules = [{"codes": rules, "why": added.get("why")}]
    for rule in rules:
        if not isinstance(rule, Mapping) or not rule.get("why"):
            raise ValueError(f"{key}: every exclusion needs a 'why': {rule!r}")
        if not {"codes", "display_pattern", "tty"} & rule.keys():
            raise ValueError(f"{key}: exclusion selects nothing: {rule!r}")
    return rules


def apply_exclusions(
    key: str, entries: Sequence[Mapping[str, Any]], added: Mapping[str, Any]
) -> tuple[list[Mapping[str, Any]], list[dict[str, Any]]]:
    """Drop the entries each rule selects (by code, display regex or RxNorm TTY).

    Returns the kept entries and, per rule, its `why` and the codes it removed (for the
    description). A rule that removes nothing, or names a code the key does not have, is an
    error: after a terminology refresh a stale or mistyped exclusion must be looked at, not
    silently ignored.
    """
    kept = list(entries)
    records = []
    for rule in _exclusion_rules(key, added):
        listed = {c.strip() for c in rule.get("codes", ())}
        missing = sorted(listed - {e["code"].strip() for e in kept})
        if missing:
            raise ValueError(f"{key}: excluded codes not in the value set: {missing}")
        pattern = re.compile(rule["display_pattern"]) if rule.get("display_pattern") else None
        ttys = frozenset(rule.get("tty", ()))

        def selected(e: Mapping[str, Any], listed=listed, pattern=pattern, ttys=ttys) -> bool:
            return (
                e["code"].strip() in listed
                or (pattern is not None and pattern.search(e["display"]) is not None)
                or (e.get("tty") in ttys)
            )

        removed = [e for e in kept if selected(e)]
        if not removed:
            raise ValueError(f"{key}: exclusion removes nothing: {rule!r}")
        kept = [e for e in kept if not selected(e)]
        codes = sorted({e["code"].strip() for e in removed})
        records.append({"why": rule["why"], "codes": codes})
    return kept, records


def write_all(valuesets: Mapping[str, Mapping[str, Any]], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = {file_name(k) for k in valuesets}
    # Remove files for keys that no longer exist, so the directory mirrors the input exactly.
    for stale in out_dir.glob("*.json"):
        if stale.name not in wanted and stale.name.startswith(
            tuple(p.replace("/", ".") for p in INCLUDED_PREFIXES)
        ):
            stale.unlink()
    written = []
    for key, vs in sorted(valuesets.items()):
        path = out_dir / file_name(key)
        path.write_text(dumps(vs), encoding="utf-8", newline="\n")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("terminology", nargs="?", type=Path, default=DEFAULT_TERMINOLOGY)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    valuesets = build_all(args.terminology)
    for vs in valuesets.values():
        validate(vs)
    written = write_all(valuesets, args.out)
    total = sum(vs["expansion"]["total"] for vs in valuesets.values())
    print(f"wrote {len(written)} ValueSets ({total} codes) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
