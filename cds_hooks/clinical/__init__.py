"""Pure clinical computations over FHIR dicts (doses, renal function): no I/O, no clock."""
