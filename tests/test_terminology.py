"""Tests for the value-set matcher (cds_hooks.terminology) and its build script."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from fhir.resources.R4B.valueset import ValueSet

from cds_hooks.terminology import (
    ATC,
    ICD10CM,
    LOINC,
    RXNORM,
    SNOMED,
    Terminology,
    normalize_system,
)

REPO = Path(__file__).resolve().parents[1]
VALUESET_DIR = REPO / "cds_hooks" / "knowledge" / "valuesets"
BUILD_SCRIPT = REPO / "tools" / "build_valuesets.py"
SHARED_TERMINOLOGY = REPO.parent / "shared" / "terminology"

BACLOFEN = "drug/baclofen"
BACLOFEN_IT = "drug/baclofen-intrathecal"
BACLOFEN_ORAL = "drug/baclofen-oral"
ANTISPASTIC = "drug-group/antispastic-agents"
DOPA_ALL = "drug-group/dopamine-antagonists-all"
MS = "condition/multiple-sclerosis"


@pytest.fixture(scope="module")
def term() -> Terminology:
    return Terminology.load()


def concept(*codings: tuple[str, str], text: str | None = None) -> dict:
    out: dict = {"coding": [{"system": s, "code": c} for s, c in codings]}
    if text is not None:
        out["text"] = text
    return out


# -- coded matching ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "code", "expected", "not_expected"),
    [
        # baclofen ingredient, oral SCD, Ozobax SBD
        (RXNORM, "1292", {BACLOFEN, ANTISPASTIC}, {BACLOFEN_ORAL, BACLOFEN_IT}),
        (RXNORM, "197391", {BACLOFEN, BACLOFEN_ORAL, ANTISPASTIC}, {BACLOFEN_IT}),
        (RXNORM, "2201578", {BACLOFEN, BACLOFEN_ORAL, ANTISPASTIC}, {BACLOFEN_IT}),
        # intrathecal product: in the intrathecal subset, never the oral one
        (RXNORM, "308516", {BACLOFEN, BACLOFEN_IT, ANTISPASTIC}, {BACLOFEN_ORAL}),
        # tizanidine ingredient and a Zanaflex tablet
        (RXNORM, "57258", {"drug/tizanidine", ANTISPASTIC}, {BACLOFEN, "drug/tizanidine-oral"}),
        (RXNORM, "153734", {"drug/tizanidine", "drug/tizanidine-oral", ANTISPASTIC}, {BACLOFEN}),
        # haloperidol 2 mg/mL oral solution -> typical antipsychotic and all dopamine antagonists
        (
            RXNORM,
            "141935",
            {"drug/haloperidol", "drug-group/antipsychotics-typical", DOPA_ALL},
            {"drug-group/antiemetic-dopamine-antagonists", ANTISPASTIC},
        ),
        # metoclopramide 10 mg tablet [Reglan] -> antiemetic dopamine antagonists
        (
            RXNORM,
            "207266",
            {"drug/metoclopramide", "drug-group/antiemetic-dopamine-antagonists", DOPA_ALL},
            {"drug-group/antipsychotics-typical"},
        ),
        # ATC: exact substance code, plus class prefixes N05A of the antipsychotic groups
        (
            ATC,
            "N05AD01",
            {
                "drug/haloperidol",
                "drug-group/antipsychotics-typical",
                "drug-group/antipsychotics-atypical",
                DOPA_ALL,
            },
            {"drug-group/antiemetic-dopamine-antagonists"},
        ),
        (ATC, "M03BX01", {BACLOFEN, ANTISPASTIC}, {"drug/tizanidine"}),
        # ICD-10-CM: old header code, new dotted code, undotted variant, prefix-only child
        (ICD10CM, "G35", {MS}, {"condition/parkinsons-disease"}),
        (ICD10CM, "G35.A", {MS}, set()),
        (ICD10CM, "G35A", {MS}, set()),
        (ICD10CM, " g35.a ", {MS}, set()),
        (ICD10CM, "G20.A1", {"condition/parkinsons-disease"}, {MS}),
        (ICD10CM, "I63.9", {"condition/stroke-cerebrovascular"}, {MS}),
        # SNOMED root is matched exactly
        (SNOMED, "24700007", {MS}, set()),
        (SNOMED, "72607000", {"route/intrathecal"}, {"route/oral"}),
        (LOINC, "34714-6", {"observation/inr"}, set()),
    ],
)
def test_keys_for_coding(term, system, code, expected, not_expected):
    keys = term.keys_for_coding(system, code)
    assert expected <= keys, keys
    assert not (not_expected & keys)


@pytest.mark.parametrize(
    ("system", "code"),
    [
        (RXNORM, "161"),  # acetaminophen
        (RXNORM, "12929"),  # looks like baclofen 1292 but is not a prefix system
        (SNOMED, "38341003"),  # hypertension
        (ICD10CM, "E11.9"),  # type 2 diabetes
        (ICD10CM, "G3"),  # shorter than the G35 heading: no reverse prefix match
        (ATC, "N05B"),  # anxiolytics: sibling class, not N05A
        (ATC, "N05"),  # parent of the class prefix does not match it
        (LOINC, "2345-7"),  # glucose
        ("http://example.org/local", "1292"),  # right code, wrong system
        (None, "1292"),
        (RXNORM, None),
        (RXNORM, "   "),
    ],
)
def test_unrelated_codes_match_nothing(term, system, code):
    assert term.keys_for_coding(system, code) == frozenset()


def test_snomed_descendants_are_not_inferred(term):
    # 426373005 Relapsing remitting MS is a descendant of 24700007, but without a hierarchy it
    # only matches when enumerated; assert the documented exact-only behaviour on a non-member.
    assert term.keys_for_coding(SNOMED, "2470000") == frozenset()
    assert term.keys_for_coding(SNOMED, "247000071") == frozenset()


def test_icd10_who_system_is_not_treated_as_cm(term):
    assert term.keys_for_coding("http://hl7.org/fhir/sid/icd-10", "G35") == frozenset()


@pytest.mark.parametrize(
    ("variant", "canonical"),
    [
        ("urn:oid:2.16.840.1.113883.6.88", RXNORM),
        ("http://www.nlm.nih.gov/research/umls/rxnorm/", RXNORM),
        (" urn:oid:2.16.840.1.113883.6.96 ", SNOMED),
        ("http://snomed.info/sct/731000124108", SNOMED),
        ("http://snomed.info/sct/900000000000207008/version/20250101", SNOMED),
        ("urn:oid:2.16.840.1.113883.6.90", ICD10CM),
        ("urn:oid:2.16.840.1.113883.6.1", LOINC),
        ("urn:oid:2.16.840.1.113883.6.73", ATC),
        ("http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10"),
        ("http://snomed.info/sctx", "http://snomed.info/sctx"),
    ],
)
def test_normalize_system(variant, canonical):
    assert normalize_system(variant) == canonical


def test_oid_variants_match(term):
    assert BACLOFEN_ORAL in term.keys_for_coding("urn:oid:2.16.840.1.113883.6.88", "197391")
    assert MS in term.keys_for_coding("urn:oid:2.16.840.1.113883.6.90", "G35.A")
    assert MS in term.keys_for_coding("http://snomed.info/sct/731000124108", "24700007")
    assert "drug/haloperidol" in term.keys_for_coding("urn:oid:2.16.840.1.113883.6.73", "N05AD01")


def test_group_codes_equal_member_roll_up(term):
    # For unfiltered groups the expansion is exactly the members' codes plus ATC class prefixes,
    # so a member code always yields the group.
    for key in term.keys():
        if not key.startswith("drug-group/"):
            continue
        vs = term.valueset(key)
        members = [
            e["valueString"] for e in vs.get("extension", []) if e["url"].endswith("/group-members")
        ]
        if not members or "Filter:" in vs["description"]:
            continue
        member_codes = {(s, c) for m in members for s, c, _ in term.codes(m)}
        group_codes = {(s, c) for s, c, _ in term.codes(key)}
        assert member_codes <= group_codes, key
        assert {s for s, c in group_codes - member_codes} <= {ATC}, key
        for system, code in member_codes:
            assert key in term.keys_for_coding(system, code), (key, code)


def test_filtered_group_keeps_its_filter(term):
    # Mirena (levonorgestrel IUD) is a levonorgestrel product but not an oral contraceptive.
    keys = term.keys_for_coding(RXNORM, "807283")
    assert "drug/levonorgestrel" in keys
    assert "drug-group/oral-contraceptives" not in keys
    assert "drug-group/oral-contraceptives" in term.keys_for_coding(ATC, "G03AA07")


def test_keys_for_concept_unions_codings(term):
    cc = concept(("http://example.org/ndc", "0000"), (RXNORM, "308516"), (ICD10CM, "G35"))
    keys = term.keys_for_concept(cc)
    assert {BACLOFEN_IT, ANTISPASTIC, MS} <= keys
    assert term.keys_for_concept(None) == frozenset()
    assert term.keys_for_concept({}) == frozenset()
    assert term.keys_for_concept({"text": "baclofen"}) == frozenset()
    assert term.keys_for_concept({"coding": [None, {"system": RXNORM}]}) == frozenset()


def test_in_valueset(term):
    assert term.in_valueset(concept((RXNORM, "308516")), BACLOFEN_IT)
    assert not term.in_valueset(concept((RXNORM, "308516")), BACLOFEN_ORAL)
    assert term.in_valueset(concept((ATC, "N05AD01")), "drug-group/antipsychotics-atypical")
    assert not term.in_valueset(None, BACLOFEN)
    with pytest.raises(KeyError):
        term.in_valueset(concept((RXNORM, "1292")), "drug/baclofenn")
    # Several keys: in any of them.
    assert term.in_valueset(concept((RXNORM, "308516")), BACLOFEN_ORAL, BACLOFEN_IT)


def test_matching_coding_names_the_coding_as_sent(term):
    sent = {
        "coding": [
            {"system": "http://example.org/local", "code": "CRCL"},
            {"system": "urn:oid:2.16.840.1.113883.6.1", "code": "2164-2", "display": " "},
        ]
    }
    assert term.matching_coding(sent, "observation/creatinine-clearance") == (
        "urn:oid:2.16.840.1.113883.6.1",
        "2164-2",
        None,
    )
    assert term.matching_coding(sent, "observation/egfr") is None
    assert term.matching_coding(None, "observation/egfr") is None
    with pytest.raises(KeyError):
        term.matching_coding(sent, "observation/crcl")


def test_systems_of_a_value_set(term):
    assert term.systems("observation/creatinine-clearance") == {LOINC}
    assert SNOMED in term.systems("route/oral")


def test_coded_in_the_systems_of_a_value_set(term):
    vaginal = {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.96", "code": "16857009"}]}
    local = {"coding": [{"system": "http://hospital.example/routes", "code": "PV"}]}
    assert term.coded_in_systems_of(vaginal, "route/oral")  # SNOMED CT, though not oral
    assert not term.in_valueset(vaginal, "route/oral")
    assert not term.coded_in_systems_of(local, "route/oral")
    assert not term.coded_in_systems_of({"coding": [{"system": SNOMED, "code": " "}]}, "route/oral")
    assert not term.coded_in_systems_of(None, "route/oral")


# -- free text -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Baclofen 10mg", {BACLOFEN, ANTISPASTIC}),
        ("Baclofen 10 mg tablet", {BACLOFEN, ANTISPASTIC}),
        ("LIORESAL intrathecal", {BACLOFEN, ANTISPASTIC}),
        ("Ozobax 5 mg/5 mL oral solution", {BACLOFEN, ANTISPASTIC}),
        ("gablofen 50 mcg/mL", {BACLOFEN, ANTISPASTIC}),
        ("Zanaflex 4mg", {"drug/tizanidine", ANTISPASTIC}),
        ("tizanidine(4 mg)", {"drug/tizanidine", ANTISPASTIC}),
        (
            "Haldol 5 mg IM",
            {
                "drug/haloperidol",
                "drug-group/antipsychotics-typical",
                DOPA_ALL,
            },
        ),
        (
            "ethinyl estradiol / levonorgestrel",
            {
                "drug/ethinyl-estradiol",
                "drug/levonorgestrel",
                "drug-group/oral-contraceptives",
            },
        ),
        ("Ethinyl-Estradiol", {"drug/ethinyl-estradiol", "drug-group/oral-contraceptives"}),
    ],
)
def test_keys_for_text_matches(term, text, expected):
    keys = term.keys_for_text(text)
    assert expected <= keys, keys
    assert not any(k in keys for k in (BACLOFEN_ORAL, BACLOFEN_IT, "drug/tizanidine-oral"))


OC = "drug-group/oral-contraceptives"


@pytest.mark.parametrize(
    ("text", "in_group"),
    [
        # Brands the clinical review took out of the group (menopausal hormone therapy, a
        # progestin for bleeding, a fibroid treatment): curation wins over the name (Round 2).
        ("Jinteli 1 mg / 5 mcg oral tablet", False),
        ("Fyavolv", False),
        ("Jevantique Lo", False),
        ("Aygestin 5 mg", False),
        ("Gallifrey", False),
        ("Myfembree", False),
        # Brands the group's own filter leaves out (rings, patches): not pills.
        ("NuvaRing", False),
        ("Xulane patch", False),
        ("Annovera", False),
        # A brand in the group, and bare ingredient names (text cannot tell the form), still count.
        ("Plan B One-Step", True),
        ("ethinyl estradiol / norethindrone tablet", True),
    ],
)
def test_a_brand_name_counts_for_a_group_only_as_its_code_would(term, text, in_group):
    keys = term.keys_for_text(text)
    assert keys & {"drug/ethinyl-estradiol", "drug/norethindrone", "drug/levonorgestrel"}, keys
    assert (OC in keys) is in_group, keys


@pytest.mark.parametrize(
    "text",
    [
        "baclofenol",
        "prebaclofen",
        "baclofen_x",
        "tizanidines",
        "Lioresalx 10 mg",
        "acetaminophen 500 mg",
        "patient may react to latex",  # "React" is a brand name, but a stop-word for text
        "",
        None,
    ],
)
def test_keys_for_text_ignores_partial_words(term, text):
    assert not {BACLOFEN, "drug/tizanidine"} & term.keys_for_text(text)
    if text in ("baclofenol", "acetaminophen 500 mg", "patient may react to latex", "", None):
        assert term.keys_for_text(text) == frozenset()


# -- metadata ------------------------------------------------------------------------------


def test_metadata(term):
    assert term.title(BACLOFEN) == "Baclofen"
    assert term.title(MS) == "Multiple sclerosis"
    assert term.title(DOPA_ALL) == "Dopamine antagonists (all)"
    keys = term.keys()
    assert keys == sorted(keys)
    assert {BACLOFEN, BACLOFEN_IT, MS, DOPA_ALL, "route/intrathecal"} <= set(keys)
    assert not any(k.startswith("doseform/") for k in keys)
    assert (RXNORM, "1292", "baclofen") in term.codes(BACLOFEN)
    assert all(s == ATC for s, _, _ in term.codes(BACLOFEN, "urn:oid:2.16.840.1.113883.6.73"))
    assert term.codes(BACLOFEN, ATC) == [(ATC, "M03BX01", "baclofen")]
    vs = term.valueset(BACLOFEN)
    vs["title"] = "changed"
    assert term.title(BACLOFEN) == "Baclofen"
    assert term.valueset(BACLOFEN)["title"] == "Baclofen"
    with pytest.raises(KeyError):
        term.valueset("drug/nothing")


def test_load_rejects_broken_files(tmp_path):
    with pytest.raises(ValueError, match="no ValueSet"):
        Terminology.load(tmp_path)
    (tmp_path / "drug.x.json").write_text(json.dumps({"resourceType": "CodeSystem"}))
    with pytest.raises(ValueError, match="not a FHIR ValueSet"):
        Terminology.load(tmp_path)


def test_load_from_other_directory(tmp_path):
    src = json.loads((VALUESET_DIR / "drug.baclofen.json").read_text())
    (tmp_path / "drug.baclofen.json").write_text(json.dumps(src))
    small = Terminology.load(tmp_path)
    assert small.keys() == [BACLOFEN]
    assert small.keys_for_coding(RXNORM, "308516") == frozenset({BACLOFEN})
    assert small.keys_for_text("Lioresal") == frozenset({BACLOFEN})


# -- the committed files -------------------------------------------------------------------

VALUESET_FILES = sorted(VALUESET_DIR.glob("*.json"))


def test_valueset_files_exist():
    assert len(VALUESET_FILES) > 100


@pytest.mark.parametrize("path", VALUESET_FILES, ids=lambda p: p.name)
def test_valueset_file_is_valid_r4b(path):
    data = json.loads(path.read_text(encoding="utf-8"))
    ValueSet.model_validate(data)
    key = path.stem.replace(".", "/", 1)
    assert data["id"] == key.replace("/", "-")
    assert data["url"] == f"http://antispasticity-cds.org/fhir/ValueSet/{data['id']}"
    assert data["version"] == "1.0.0"
    assert data["status"] == "active"
    assert data["expansion"]["total"] == len(data["expansion"]["contains"]) > 0
    for entry in data["expansion"]["contains"]:
        urls = [e["url"].rsplit("/", 1)[1] for e in entry["extension"]]
        assert urls[0] == "code-source"
        assert set(urls) <= {"code-source", "code-match", "rxnorm-tty", "code-note"}
    assert path.read_text(encoding="utf-8").endswith("}\n")


# -- the build script ----------------------------------------------------------------------


def _load_build_module():
    spec = importlib.util.spec_from_file_location("build_valuesets", BUILD_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(
    not (SHARED_TERMINOLOGY / "codes.json").exists(),
    reason=f"shared terminology not present at {SHARED_TERMINOLOGY} (needed to rebuild)",
)
def test_build_is_deterministic_and_matches_committed_files(tmp_path, capsys):
    build = _load_build_module()
    first, second = tmp_path / "a", tmp_path / "b"
    assert build.main([str(SHARED_TERMINOLOGY), "--out", str(first)]) == 0
    assert build.main([str(SHARED_TERMINOLOGY), "--out", str(second)]) == 0
    capsys.readouterr()
    names = sorted(p.name for p in first.glob("*.json"))
    assert names == sorted(p.name for p in second.glob("*.json"))
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    # The committed files are exactly what the script produces from the shared input.
    assert names == [p.name for p in VALUESET_FILES]
    for name in names:
        assert (first / name).read_bytes() == (VALUESET_DIR / name).read_bytes(), name


@pytest.mark.skipif(
    not (SHARED_TERMINOLOGY / "codes.json").exists(),
    reason=f"shared terminology not present at {SHARED_TERMINOLOGY} (needed to rebuild)",
)
def test_build_removes_stale_files_only(tmp_path, capsys):
    build = _load_build_module()
    (tmp_path / "drug.gone.json").write_text("{}")
    (tmp_path / "README.json").write_text("{}")
    build.main([str(SHARED_TERMINOLOGY), "--out", str(tmp_path)])
    capsys.readouterr()
    assert not (tmp_path / "drug.gone.json").exists()
    assert (tmp_path / "README.json").exists()


# -- curated exclusions (tools/valueset_additions.json, clinical review) ---------------------

ANTICOAGULANTS = "drug-group/anticoagulants"
CYP1A2_STRONG = "drug-group/cyp1a2-inhibitors-strong-contraindicated-with-tizanidine"
COAGULOPATHY = "condition/coagulopathy-bleeding-disorder"
SCOLIOSIS = "condition/scoliosis-severe-spinal-deformity"
SPINAL_CORD = "condition/spinal-cord-injury-or-disease"
REMISSION = "condition/depression-in-remission"


@pytest.mark.parametrize(
    ("system", "code", "key", "member"),
    [
        # brand names do not say the form: Lioresal was also an oral tablet brand
        (RXNORM, "202996", BACLOFEN_IT, False),
        (RXNORM, "1047432", BACLOFEN_IT, False),
        (RXNORM, "202996", BACLOFEN, True),
        (RXNORM, "805679", BACLOFEN_IT, True),  # Lioresal intrathecal injection (SBD)
        (RXNORM, "2201573", BACLOFEN_ORAL, True),  # Ozobax: an oral-only brand
        # heparin flushes and catheter locks are not anticoagulant therapy
        (RXNORM, "1362060", ANTICOAGULANTS, False),  # 2 mL of 100 units/mL flush syringe
        (RXNORM, "1658692", ANTICOAGULANTS, False),  # 500 mL of 2 units/mL
        (RXNORM, "2670463", ANTICOAGULANTS, False),  # Defencath catheter lock
        (RXNORM, "2670461", "drug/heparin", False),
        (RXNORM, "1658717", ANTICOAGULANTS, True),  # 25,000 units in 250 mL premix
        (RXNORM, "1659195", ANTICOAGULANTS, True),  # 25,000 units in 500 mL premix
        (RXNORM, "1658659", ANTICOAGULANTS, True),  # 1,000 units/mL vial
        # thrombophilias are not bleeding disorders; the D68/D69 headings no longer catch them
        (ICD10CM, "D68.51", COAGULOPATHY, False),
        (ICD10CM, "D68.61", COAGULOPATHY, False),
        (ICD10CM, "D68.5", COAGULOPATHY, False),
        (ICD10CM, "D69.0", COAGULOPATHY, False),
        (ICD10CM, "D68.0", COAGULOPATHY, True),
        (ICD10CM, "D68.311", COAGULOPATHY, True),
        (ICD10CM, "D69.3", COAGULOPATHY, True),
        # otic and ophthalmic ciprofloxacin: no systemic CYP1A2 inhibition
        (RXNORM, "309307", CYP1A2_STRONG, False),
        (RXNORM, "404930", "drug/ciprofloxacin", False),  # Ciprodex
        (RXNORM, "309309", CYP1A2_STRONG, True),
        (RXNORM, "203563", CYP1A2_STRONG, True),  # Cipro
        # postural kyphosis / lordosis are not severe deformities
        (ICD10CM, "M40.04", SCOLIOSIS, False),
        (ICD10CM, "M40.46", SCOLIOSIS, False),
        (ICD10CM, "M40.57", SCOLIOSIS, False),
        (ICD10CM, "M40.14", SCOLIOSIS, True),
        (ICD10CM, "M41.125", SCOLIOSIS, True),
        # paralysis of any cause and cauda equina lesions are not spinal cord disease
        (ICD10CM, "G82.50", SPINAL_CORD, False),
        (SNOMED, "275468009", SPINAL_CORD, False),
        (SNOMED, "123391000119106", SPINAL_CORD, False),
        (ICD10CM, "G83.4", SPINAL_CORD, False),
        (ICD10CM, "G36.1", SPINAL_CORD, False),
        (ICD10CM, "S14.111A", SPINAL_CORD, True),
        (SNOMED, "441705005", SPINAL_CORD, True),
        (SNOMED, "698754002", SPINAL_CORD, True),  # curated extension still applied
        (ICD10CM, "G36.0", SPINAL_CORD, True),
        (ICD10CM, "Q06.8", SPINAL_CORD, True),
        # bipolar depression in remission stays a bipolar warning
        (SNOMED, "67002003", REMISSION, False),
        (SNOMED, "67002003", "condition/bipolar-disorder", True),
        (SNOMED, "30605009", REMISSION, True),
    ],
)
def test_curated_exclusions(term, system, code, key, member):
    assert (key in term.keys_for_coding(system, code)) is member


def test_no_bipolar_code_in_depression_in_remission(term):
    assert not [d for _, _, d in term.codes(REMISSION) if "bipolar" in d.lower()]


def test_exclusions_are_recorded_in_descriptions(term):
    assert "Codes removed: 1047432, 202996." in term.valueset(BACLOFEN_IT)["description"]
    assert "Member drug/heparin has 7 codes removed" in term.valueset(ANTICOAGULANTS)["description"]


ENTRIES = [
    {"system": RXNORM, "code": "1", "display": "x 100 UNT/ML Flush", "tty": "SCD"},
    {"system": RXNORM, "code": "2", "display": "Brand", "tty": "BN"},
    {"system": RXNORM, "code": "3", "display": "x 5000 UNT/ML Injection", "tty": "SCD"},
]


def test_apply_exclusions_selectors():
    build = _load_build_module()
    rules = {
        "exclude": [
            {"display_pattern": "(?i)flush", "why": "flush"},
            {"tty": ["BN"], "why": "brand"},
        ]
    }
    kept, records = build.apply_exclusions("drug/x", ENTRIES, rules)
    assert [e["code"] for e in kept] == ["3"]
    assert records == [{"why": "flush", "codes": ["1"]}, {"why": "brand", "codes": ["2"]}]
    # the older form: a plain list of codes with one key-level reason
    kept, records = build.apply_exclusions("drug/x", ENTRIES, {"exclude": ["3"], "why": "w"})
    assert [e["code"] for e in kept] == ["1", "2"]
    assert records == [{"why": "w", "codes": ["3"]}]


@pytest.mark.parametrize(
    ("added", "message"),
    [
        ({"exclude": [{"codes": ["9"], "why": "w"}]}, "not in the value set"),
        ({"exclude": [{"display_pattern": "nothing", "why": "w"}]}, "removes nothing"),
        ({"exclude": [{"codes": ["1"]}]}, "needs a 'why'"),
        ({"exclude": ["1"]}, "needs a 'why'"),
        ({"exclude": [{"why": "w"}]}, "selects nothing"),
    ],
)
def test_apply_exclusions_rejects_stale_or_unexplained_rules(added, message):
    build = _load_build_module()
    with pytest.raises(ValueError, match=message):
        build.apply_exclusions("drug/x", ENTRIES, added)


SCI = "condition/spinal-cord-injury-or-disease"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Multiple sclerosis", {MS}),
        ("multiple-sclerosis, relapsing", {MS}),
        ("SCI C5", {SCI}),
        ("Paraplegia after spinal cord injury", {SCI}),
        ("Sciatica", set()),
        ("Seasonal allergic rhinitis", set()),
        ("", set()),
        (None, set()),
    ],
)
def test_keys_for_condition_text(term, text, expected):
    # The names are the value sets' condition-text-name extensions (knowledge), whole words.
    assert set(term.keys_for_condition_text(text)) == expected


def test_remembered_answers_keep_no_long_strings():
    """The lookup caches hold EHR strings: a code, system or name longer than a name is answered
    but not kept, so 50,000 made-up 20 kB codes cannot pin a gigabyte per worker."""
    term = Terminology.load()
    long_code, long_system = "7" * 20_000, "http://example.org/" + "s" * 20_000
    assert term.keys_for_coding(RXNORM, long_code) == frozenset()
    assert term.keys_for_coding(long_system, "1") == frozenset()
    assert term.keys_for_text("baclofen " + "x" * 20_000)
    assert term.keys_for_coding(RXNORM, "1292") == term.keys_for_coding(RXNORM, "1292")
    kept = [key for cache in (term._by_coding, term._by_text) for key in cache]
    assert kept and all(len(a) <= 200 and len(b) <= 200 for a, b in kept)
