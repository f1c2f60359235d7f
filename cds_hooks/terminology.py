"""The one value-set matcher: "is this concept/coding in value set K", for every rule and engine.

Maps FHIR codings and medication text to the project's value-set keys. Nothing else in the
service compares systems or codes: the record, the clinical engines (`clinical/`) and the rules
ask :class:`Terminology` (``in_valueset``, ``matching_coding``, ``keys_for_concept``), so system
aliases and code forms are normalised in this module only.

The value sets are the FHIR ValueSet files in ``cds_hooks/knowledge/valuesets`` (built by
``tools/build_valuesets.py``). ``Terminology.load()`` reads and checks them once at start-up and
precomputes plain dicts, sets and one regex, so that a lookup on the request path is a few dict
gets; no pydantic, no I/O after loading.

Matching rules
--------------
* A coding matches a key when its (system, code) is in the key's expansion. Codes are compared
  trimmed; ICD-10-CM and ATC codes upper-cased; ICD-10-CM with and without the dot (``G35.A`` and
  ``G35A`` are the same code).
* Entries flagged ``code-match = prefix`` (ICD-10-CM headings and ATC classes) match every code
  that starts with them, because ICD-10-CM codes move between releases (G35 became G35.A-G35.D in
  FY2026) and ATC classes stand for all their substances.
* Entries flagged ``code-match = descendant-or-self`` (SNOMED CT hierarchy roots) match the root
  code **exactly only**: no SNOMED CT hierarchy is available offline. The enumerated descendants
  in the same value set are matched as usual; anything else needs a terminology server.
* A code that matches a ``drug/*`` key also matches every ``drug-group/*`` key whose expansion
  contains it. Group expansions are the union of their members' codes (listed in the
  ``group-members`` extension), so this is the member roll-up; the one exception is a group whose
  terminology note declares a filter (``drug-group/oral-contraceptives`` leaves out rings, IUDs
  and patches), where the filtered expansion is authoritative, so that ``keys_for_coding`` and
  ``in_valueset`` always agree.
* System URIs are normalised from the variants EHRs send (see ``SYSTEM_ALIASES``).

``keys_for_text`` finds drug names in free text (``medicationCodeableConcept.text``): whole-word,
case-insensitive, ingredient names plus RxNorm brand names (TTY BN). An ingredient name adds the
drug groups that list the drug as a member (text cannot tell a ring from a pill, so no filter
applies). A brand name adds only the groups whose expansion lists that brand's code, as the coded
brand would match: a brand that clinical review took out of a group (Jinteli, menopausal hormone
therapy, out of the oral contraceptives) or that a group's filter leaves out (a vaginal ring) does
not come back by its name (clinical-rules.md Round 2: curation wins over names).
"""

from __future__ import annotations

import copy
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeGuard

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
ATC = "http://www.whocc.no/atc"
EDQM = "http://standardterms.edqm.eu"

DEFAULT_DIRECTORY = Path(__file__).resolve().parent / "knowledge" / "valuesets"

_EXT_BASE = "http://antispasticity-cds.org/fhir/StructureDefinition/"
EXT_MATCH = _EXT_BASE + "code-match"
EXT_TTY = _EXT_BASE + "rxnorm-tty"
EXT_GROUP_MEMBERS = _EXT_BASE + "group-members"
EXT_CURATED_OUT = _EXT_BASE + "curated-exclusion"
# On a condition ValueSet: a name that, in a Condition known only by its text (no coding in any
# value set), means the condition (clinical-rules.md Round 2: "An indication is present while the
# disease is"). The words are knowledge, kept with the value set they stand for.
EXT_TEXT_NAME = _EXT_BASE + "condition-text-name"

# Known aliases, compared after trimming, dropping a trailing "/" and lower-casing. Kept
# deliberately short: only identifiers that denote exactly the same code system.
# - The urn:oid forms are the HL7 OIDs registered for each system (HL7 v2/CDA habit).
# - WHO ICD-10 (http://hl7.org/fhir/sid/icd-10, urn:oid:2.16.840.1.113883.6.3) is NOT mapped to
#   ICD-10-CM: the US clinical modification has codes WHO ICD-10 lacks and vice versa.
# - SNOMED CT edition/module URIs (http://snomed.info/sct/<module>[/version/<date>]) are handled
#   in normalize_system, since the module id varies.
# - EDQM: the OID Swiss IGs use for Standard Terms (see shared/terminology codes.json note).
SYSTEM_ALIASES: dict[str, str] = {
    RXNORM: RXNORM,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    SNOMED: SNOMED,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    ICD10CM: ICD10CM,
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    LOINC: LOINC,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    ATC: ATC,
    "urn:oid:2.16.840.1.113883.6.73": ATC,
    EDQM: EDQM,
    "urn:oid:0.4.0.127.0.16.1.1.2.1": EDQM,
}

# RxNorm brand names that are everyday words or first names; as free text they would flag
# unrelated notes ("may react", "Julie"), so they are matched by code only.
TEXT_STOPWORDS = frozenset({"react", "julie", "my way", "new day"})

CODING_CACHE_SIZE = 50_000  # answers kept per lookup
# Characters of a system, code or name whose answer is kept: with the entry count this bounds
# each cache at ~50,000 x 2 x 200 characters (~20 MB), whatever an EHR sends.
MAX_REMEMBERED_TEXT = 200
_EMPTY: frozenset[str] = frozenset()
_WORD_SEPARATOR = re.compile(r"[\s\-]+")


SYSTEM_NAMES = {
    SNOMED: "SNOMED CT",
    ICD10CM: "ICD-10-CM",
    ICD10: "ICD-10",
    RXNORM: "RxNorm",
    LOINC: "LOINC",
    ATC: "ATC",
}


def _remembered(
    cache: dict[tuple[str, str], frozenset[str]],
    key: tuple[str, str],
    compute: Callable[[], frozenset[str]],
) -> frozenset[str]:
    """`compute()` once per key while the cache holds it: emptied when full, and keys longer
    than a name are not kept (free text is not a vocabulary; a code sent 1 MB long is a flood)."""
    if len(key[0]) > MAX_REMEMBERED_TEXT or len(key[1]) > MAX_REMEMBERED_TEXT:
        return compute()
    found = cache.get(key)
    if found is None:
        if len(cache) >= CODING_CACHE_SIZE:
            cache.clear()
        found = cache[key] = compute()
    return found


def _is_mapping(value: Any) -> TypeGuard[Mapping[Any, Any]]:
    # A dict first: isinstance against the Mapping ABC costs ~0.4 us, and the request path asks
    # it of every coding it looks up (docs/performance.md, "Fixed cost, session 3").
    return type(value) is dict or isinstance(value, Mapping)


def system_name(system: str) -> str:
    """How a card names a code system: "SNOMED CT 230690007", not the URI."""
    return SYSTEM_NAMES.get(normalize_system(system) or system, system)


def normalize_system(system: str | None) -> str | None:
    """Canonical FHIR URI for a known system alias; other URIs are returned trimmed."""
    if system is None:
        return None
    trimmed = system.strip()
    folded = trimmed.rstrip("/").lower()
    canonical = SYSTEM_ALIASES.get(folded)
    if canonical is not None:
        return canonical
    if folded.startswith(SNOMED + "/"):
        return SNOMED
    return trimmed


def normalize_code(system: str | None, code: str) -> str:
    """The form codes are indexed under: trimmed; ICD-10-CM and ATC upper-cased, ICD undotted."""
    code = code.strip()
    if system == ICD10CM:
        return code.upper().replace(".", "")
    if system == ATC:
        return code.upper()
    return code


def _extension_value(element: Mapping[str, Any], url: str) -> str | None:
    for ext in element.get("extension") or ():
        if ext.get("url") == url:
            return ext.get("valueCode") or ext.get("valueString")
    return None


def _key_from_filename(path: Path) -> str:
    # drug-group.antispastic-agents.json -> drug-group/antispastic-agents (keys contain no dots).
    kind, _, name = path.stem.partition(".")
    if not name:
        raise ValueError(f"{path.name}: expected <kind>.<name>.json")
    return f"{kind}/{name}"


def _text_name(name: str) -> str:
    return _WORD_SEPARATOR.sub(" ", name.strip().lower())


def _names_pattern(names: Mapping[str, Any]) -> re.Pattern[str] | None:
    """One case-insensitive whole-word pattern for the (normalised) names, or None if none."""
    if not names:
        return None
    # Longest first so "ethinyl estradiol" wins over any shorter name it contains; spaces
    # also match hyphens ("Nora-BE", "ethinyl-estradiol"). Lookarounds instead of \b so that
    # names ending in punctuation still need a word boundary.
    alternatives = sorted(names, key=lambda n: (-len(n), n))
    body = "|".join(r"[\s\-]+".join(map(re.escape, n.split(" "))) for n in alternatives)
    return re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)


class Terminology:
    """Read-only index over the value sets; build it with :meth:`load`."""

    def __init__(self, valuesets: Mapping[str, dict[str, Any]]) -> None:
        self._valuesets: dict[str, dict[str, Any]] = dict(valuesets)
        self._by_coding: dict[tuple[str, str], frozenset[str]] = {}  # keys_for_coding's answers
        # keys_for_text / keys_for_condition_text answers: the name regex costs ~12 us a name,
        # and the same drug and problem names come back call after call.
        self._by_text: dict[tuple[str, str], frozenset[str]] = {}
        self._titles: dict[str, str] = {}
        self._codes: dict[str, list[tuple[str, str, str]]] = {}
        # (system, normalised code) -> keys, including drug groups.
        self._exact: dict[tuple[str, str], frozenset[str]] = {}
        # (system, normalised prefix) -> keys; probed for each prefix length that exists.
        self._prefix: dict[tuple[str, str], frozenset[str]] = {}
        self._prefix_lengths: dict[str, tuple[int, ...]] = {}
        self._member_groups: dict[str, frozenset[str]] = {}
        self._curated_out: frozenset[tuple[str, str]] = frozenset()
        self._text_keys: dict[str, frozenset[str]] = {}
        self._text_pattern: re.Pattern[str] | None = None
        self._condition_text_keys: dict[str, frozenset[str]] = {}
        self._condition_text_pattern: re.Pattern[str] | None = None
        self._build()

    @classmethod
    def load(cls, directory: Path | None = None) -> Terminology:
        """Read every ``*.json`` ValueSet in ``directory`` (default: the packaged value sets)."""
        directory = Path(directory) if directory is not None else DEFAULT_DIRECTORY
        valuesets: dict[str, dict[str, Any]] = {}
        for path in sorted(directory.glob("*.json")):
            vs = json.loads(path.read_text(encoding="utf-8"))
            key = _key_from_filename(path)
            _check(key, vs)
            valuesets[key] = vs
        if not valuesets:
            raise ValueError(f"no ValueSet files in {directory}")
        return cls(valuesets)

    # -- building (start-up only) ------------------------------------------------------------

    def _build(self) -> None:
        exact: dict[tuple[str, str], set[str]] = defaultdict(set)
        prefix: dict[tuple[str, str], set[str]] = defaultdict(set)
        lengths: dict[str, set[int]] = defaultdict(set)
        member_groups: dict[str, set[str]] = defaultdict(set)
        curated_out: set[tuple[str, str]] = set()

        for key, vs in self._valuesets.items():
            self._titles[key] = vs.get("title") or vs.get("name") or key
            rows: list[tuple[str, str, str]] = []
            for entry in vs["expansion"]["contains"]:
                system = normalize_system(entry["system"]) or ""
                code = entry["code"].strip()
                rows.append((system, code, entry.get("display", "")))
                norm = normalize_code(system, code)
                exact[(system, norm)].add(key)
                # Prefix entries only where the research flagged them and the system is
                # hierarchical by code shape; SNOMED roots stay exact (no hierarchy offline).
                if _extension_value(entry, EXT_MATCH) == "prefix" and system in (ICD10CM, ATC):
                    prefix[(system, norm)].add(key)
                    lengths[system].add(len(norm))
            self._codes[key] = rows
            for ext in vs.get("extension") or ():
                if ext.get("url") == EXT_GROUP_MEMBERS:
                    member_groups[ext["valueString"]].add(key)
                elif ext.get("url") == EXT_CURATED_OUT and isinstance(ext.get("valueCoding"), dict):
                    coding = ext["valueCoding"]
                    system = normalize_system(coding.get("system")) or ""
                    curated_out.add((system, normalize_code(system, str(coding.get("code", "")))))

        unknown = sorted(m for m in member_groups if m not in self._valuesets)
        if unknown:
            raise ValueError(f"group-members name unknown keys: {unknown}")

        self._exact = {k: frozenset(v) for k, v in exact.items()}
        self._prefix = {k: frozenset(v) for k, v in prefix.items()}
        self._prefix_lengths = {s: tuple(sorted(v)) for s, v in lengths.items()}
        self._member_groups = {k: frozenset(v) for k, v in member_groups.items()}
        self._curated_out = frozenset(curated_out)
        self._build_text_index()

    def _build_text_index(self) -> None:
        drug_keys = [k for k in self._valuesets if k.startswith("drug/")]
        # Ingredient keys only: drug/baclofen-oral is a product subset of drug/baclofen, which is
        # recognisable because another drug key is its prefix.
        ingredients = [
            k for k in drug_keys if not any(k.startswith(other + "-") for other in drug_keys)
        ]
        names: dict[str, set[str]] = defaultdict(set)  # name -> every key it stands for
        for key in ingredients:
            name = _text_name(key.split("/", 1)[1])
            names[name] |= {key} | self._groups_of((key,))
            for entry in self._valuesets[key]["expansion"]["contains"]:
                if _extension_value(entry, EXT_TTY) == "BN":
                    brand = _text_name(entry.get("display", ""))
                    if brand and brand not in TEXT_STOPWORDS:
                        # The brand's own code decides its groups (curation and filters kept).
                        system = normalize_system(entry["system"]) or ""
                        coded = self._exact.get((system, normalize_code(system, entry["code"])))
                        groups = self._groups_of((key,)) & (coded or _EMPTY)
                        names[brand] |= {key} | groups
        self._text_keys = {name: frozenset(keys) for name, keys in names.items()}
        self._text_pattern = _names_pattern(names)
        condition_names: dict[str, set[str]] = defaultdict(set)
        for key, vs in self._valuesets.items():
            for ext in vs.get("extension") or ():
                if ext.get("url") == EXT_TEXT_NAME and isinstance(ext.get("valueString"), str):
                    condition_names[_text_name(ext["valueString"])].add(key)
        self._condition_text_keys = {n: frozenset(k) for n, k in condition_names.items()}
        self._condition_text_pattern = _names_pattern(condition_names)

    def _groups_of(self, keys: Iterable[str]) -> set[str]:
        groups: set[str] = set()
        for key in keys:
            groups |= self._member_groups.get(key, _EMPTY)
        return groups

    # -- lookups (request path) --------------------------------------------------------------

    def keys_for_coding(self, system: str | None, code: str | None) -> frozenset[str]:
        """Keys whose value set contains this coding (exact, or by ICD-10-CM/ATC prefix)."""
        # EHR data is untrusted: anything but two non-empty strings matches nothing.
        if not isinstance(system, str) or not isinstance(code, str) or not system or not code:
            return _EMPTY
        # Remembered as sent: a call asks about the same codings many times (every rule, the
        # record, the kidney-function lookup: ~90 lookups in a 28 kB call), and the answer is a
        # pure function of the two strings and the value sets, fixed at start.
        return _remembered(
            self._by_coding, (system, code), lambda: self._keys_for_coding(system, code)
        )

    def _keys_for_coding(self, sent: str, code: str) -> frozenset[str]:
        system = normalize_system(sent)
        assert system is not None
        norm = normalize_code(system, code)
        if not norm:
            return _EMPTY
        found = self._exact.get((system, norm), _EMPTY)
        lengths = self._prefix_lengths.get(system)
        if lengths:
            extra = [
                self._prefix[(system, norm[:n])]
                for n in lengths
                if n <= len(norm) and (system, norm[:n]) in self._prefix
            ]
            if extra:
                return found.union(*extra)
        return found

    def keys_for_concept(self, concept: Mapping | None) -> frozenset[str]:
        """Union of :meth:`keys_for_coding` over a CodeableConcept's codings (text ignored)."""
        # The record indexes every coded resource with this (thousands of codings in a large
        # record): a dict is tested without a call, a remembered coding is one dict get.
        if type(concept) is not dict and not _is_mapping(concept):
            return _EMPTY
        codings = concept.get("coding")
        if not isinstance(codings, list):
            return _EMPTY
        remembered = self._by_coding
        found = _EMPTY
        for coding in codings:
            if type(coding) is not dict and not _is_mapping(coding):
                continue
            system, code = coding.get("system"), coding.get("code")
            keys = remembered.get((system, code)) if type(system) is type(code) is str else None
            if keys is None:
                keys = self.keys_for_coding(system, code)
            if keys:
                found = found | keys if found else keys
        return found

    def curated_out(self, concept: Mapping | None) -> bool:
        """True when a coding of the concept was taken out of a value set by clinical review.

        Such a product (a heparin lock flush, an eye-drop fluoroquinolone) is known and judged:
        the name fallback must not bring it back (clinical-rules.md, Round 2).
        """
        if not _is_mapping(concept) or not isinstance(concept.get("coding"), list):
            return False
        for coding in concept["coding"]:
            if not _is_mapping(coding):
                continue
            system, code = coding.get("system"), coding.get("code")
            if isinstance(system, str) and isinstance(code, str) and system and code:
                norm_system = normalize_system(system) or ""
                if (norm_system, normalize_code(norm_system, code)) in self._curated_out:
                    return True
        return False

    def keys_for_text(self, text: str | None) -> frozenset[str]:
        """Drug ingredient keys named in free text (ingredient or brand name), plus their groups."""
        if not isinstance(text, str) or not text or self._text_pattern is None:
            return _EMPTY
        return _remembered(self._by_text, ("drug", text), lambda: self._keys_for_text(text))

    def _keys_for_text(self, text: str) -> frozenset[str]:
        assert self._text_pattern is not None  # checked by keys_for_text
        found: set[str] = set()
        for match in self._text_pattern.finditer(text):
            found |= self._text_keys.get(_text_name(match.group(0)), _EMPTY)
        return frozenset(found)

    def keys_for_condition_text(self, text: str | None) -> frozenset[str]:
        """Condition value-set keys whose names (the ValueSet's condition-text-name extensions)
        free text names, whole words, any case: for a Condition known only by its text."""
        pattern = self._condition_text_pattern
        if not isinstance(text, str) or not text or pattern is None:
            return _EMPTY
        return _remembered(
            self._by_text, ("condition", text), lambda: self._keys_for_condition_text(text)
        )

    def _keys_for_condition_text(self, text: str) -> frozenset[str]:
        pattern = self._condition_text_pattern
        assert pattern is not None  # checked by keys_for_condition_text
        found: set[str] = set()
        for match in pattern.finditer(text):
            found |= self._condition_text_keys.get(_text_name(match.group(0)), _EMPTY)
        return frozenset(found)

    def in_valueset(self, concept: Mapping | None, *keys: str) -> bool:
        """True when any coding of the CodeableConcept is in one of the value sets ``keys``."""
        self._known(keys)
        return not self.keys_for_concept(concept).isdisjoint(keys)

    def matching_coding(
        self, concept: Mapping | None, *keys: str
    ) -> tuple[str, str, str | None] | None:
        """(system, code, display) as sent of the first coding in one of the value sets ``keys``.

        For a card that names the code it found ("LOINC 2164-2"): same matching as
        :meth:`in_valueset`, aliases normalised.
        """
        self._known(keys)
        codings = concept.get("coding") if _is_mapping(concept) else None
        for coding in codings if isinstance(codings, list) else ():
            if not _is_mapping(coding):
                continue
            system, code, display = coding.get("system"), coding.get("code"), coding.get("display")
            if not isinstance(system, str) or not isinstance(code, str):
                continue
            if not self.keys_for_coding(system, code).isdisjoint(keys):
                shown = display if isinstance(display, str) and display.strip() else None
                return system, code, shown
        return None

    def systems(self, *keys: str) -> frozenset[str]:
        """The (canonical) code systems the value sets ``keys`` draw their codes from."""
        self._known(keys)
        return frozenset(row[0] for key in keys for row in self._codes[key])

    def coded_in_systems_of(self, concept: Mapping | None, *keys: str) -> bool:
        """True when a coding of the concept is in a code system the value sets ``keys`` use.

        Tells "coded, and not in the value set" (a known code that says no) from "coded in a
        local system" (says nothing about the value set).
        """
        systems = self.systems(*keys)
        codings = concept.get("coding") if _is_mapping(concept) else None
        return any(
            _is_mapping(c)
            and isinstance(c.get("system"), str)
            and isinstance(c.get("code"), str)
            and c["code"].strip() != ""
            and normalize_system(c["system"]) in systems
            for c in (codings if isinstance(codings, list) else ())
        )

    def known(self, keys: Iterable[str]) -> None:
        """Raise KeyError for a key that names no value set (a rule's typo fails loudly)."""
        self._known(keys)

    def _known(self, keys: Iterable[str]) -> None:
        for key in keys:
            if key not in self._valuesets:
                # A typo in a rule must fail loudly rather than silently never match.
                raise KeyError(f"unknown value set key: {key}")

    # -- metadata ----------------------------------------------------------------------------

    def valueset(self, key: str) -> dict:
        """A copy of the ValueSet JSON (copied so that callers cannot change the index)."""
        return copy.deepcopy(self._valuesets[key])

    def title(self, key: str) -> str:
        return self._titles[key]

    def codes(self, key: str, system: str | None = None) -> list[tuple[str, str, str]]:
        """(system, code, display) rows of the expansion, optionally for one system only."""
        rows = self._codes[key]
        if system is None:
            return list(rows)
        wanted = normalize_system(system)
        return [row for row in rows if row[0] == wanted]

    def keys(self) -> list[str]:
        return sorted(self._valuesets)


def _check(key: str, vs: Any) -> None:
    """Start-up check of the fields the matcher relies on (full FHIR validation is at build)."""
    if not isinstance(vs, dict) or vs.get("resourceType") != "ValueSet":
        raise ValueError(f"{key}: not a FHIR ValueSet")
    if not vs.get("url"):
        raise ValueError(f"{key}: ValueSet without url")
    contains = (vs.get("expansion") or {}).get("contains")
    if not isinstance(contains, list):
        raise ValueError(f"{key}: ValueSet without expansion.contains")
    for entry in contains:
        if not entry.get("system") or not str(entry.get("code", "")).strip():
            raise ValueError(f"{key}: expansion entry without system or code: {entry!r}")
