"""order-select: guidance on the orders a clinician just selected, before signing."""

DECLARATION = {
    "id": "antispasticity-order-select",
    "hook": "order-select",
    "title": "Antispasticity prescribing safety (order-select)",
    "description": (
        "Checks newly selected baclofen and tizanidine orders (and dopamine antagonists, "
        "contraceptives and CYP1A2 inhibitors ordered with them) against the patient's "
        "conditions, renal function, current medications and allergies."
    ),
    "usage_requirements": (
        "Send R4 MedicationRequests in draftOrders; guidance targets the selections. Prefetch "
        "the templates, or send fhirServer with fhirAuthorization so the service can read them."
    ),
    "drafts_field": "draftOrders",
    "targets_selections": True,
}
