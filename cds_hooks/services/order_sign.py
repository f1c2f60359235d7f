"""order-sign: guidance on every draft order when the clinician is about to sign."""

DECLARATION = {
    "id": "antispasticity-order-sign",
    "hook": "order-sign",
    "title": "Antispasticity prescribing safety (order-sign)",
    "description": (
        "Checks baclofen and tizanidine orders about to be signed, including stopped or reduced "
        "baclofen that needs a taper, against the patient's conditions, renal function, current "
        "medications and allergies."
    ),
    "usage_requirements": (
        "Send R4 MedicationRequests in draftOrders, with full dosage. Prefetch the templates, or "
        "send fhirServer with fhirAuthorization so the service can read them."
    ),
    "drafts_field": "draftOrders",
    "targets_selections": False,
}
