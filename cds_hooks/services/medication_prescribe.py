"""medication-prescribe (deprecated hook): its `medications` Bundle read as R4 draft orders.

The hook defines `medications` only for DSTU2/STU3; reading it as a Bundle of R4 draft
MedicationRequests is our assumption, kept for EHRs that still fire it.
"""

DECLARATION = {
    "id": "antispasticity-medication-prescribe",
    "hook": "medication-prescribe",
    "title": "Antispasticity prescribing safety (medication-prescribe, deprecated)",
    "description": (
        "The order-sign checks for EHRs that still fire the deprecated medication-prescribe "
        "hook; use the order-select or order-sign service where you can."
    ),
    "usage_requirements": (
        "Send context.medications as a Bundle of R4 draft MedicationRequests. Prefetch the "
        "templates, or send fhirServer with fhirAuthorization."
    ),
    "drafts_field": "medications",
    "targets_selections": False,
}
