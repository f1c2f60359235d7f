"""HL7 CDS Hooks 2.0 service for antispasticity (baclofen, tizanidine) prescribing safety.

Layout: `app` (factory, thin views) -> `pipeline` (one path per call) -> `protocol` (wire checks),
`fhir` (all FHIR I/O: prefetch or fetch), `record` (the patient's data, indexed), `engine` and
`rules` (the pure core: no network, no Flask, no clock, no database), `cards` (the one card
constructor), `knowledge` (clinical content as versioned data).
"""

from cds_hooks.app import create_app

__all__ = ["create_app"]
