"""The CDS services, declared once: discovery is derived from this ordered list.

Every service runs the same path (parse -> resolve data -> evaluate rules -> cards); what differs
per hook is where the draft orders are and which of them the guidance targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cds_hooks.knowledge import Knowledge
from cds_hooks.services import medication_prescribe, order_select, order_sign


@dataclass(frozen=True)
class Service:
    id: str
    hook: str
    title: str
    description: str
    usage_requirements: str
    drafts_field: str  # context field holding the Bundle of draft orders
    targets_selections: bool  # guidance targets `selections` only (order-select)

    @property
    def schema(self) -> str:
        return f"request-{self.hook}"

    def discovery(self, prefetch: Mapping[str, str]) -> dict[str, Any]:
        return {
            "hook": self.hook,
            "title": self.title,
            "description": self.description,
            "id": self.id,
            "prefetch": dict(prefetch),
            "usageRequirements": self.usage_requirements,
        }


SERVICES: tuple[Service, ...] = tuple(
    Service(**m.DECLARATION) for m in (order_select, order_sign, medication_prescribe)
)
BY_ID: dict[str, Service] = {s.id: s for s in SERVICES}


def prefetch_templates(knowledge: Knowledge) -> dict[str, str]:
    """Narrow templates (CDS Hooks 2.0 "Prefetch Template"), only the data the rules read.

    Observations are narrowed to the renal, bleeding and pregnancy codes the rules use; codes are
    system-qualified so a server cannot match another system's code of the same spelling.
    """
    terminology = knowledge.terminology
    codes = [
        f"{system}|{code}"
        for key in knowledge.common["prefetch_observations"]
        for system, code, _display in terminology.codes(key)
    ]
    patient = "{{context.patientId}}"
    return {
        "patient": f"Patient/{patient}",
        "conditions": f"Condition?patient={patient}",
        "medications": f"MedicationRequest?patient={patient}&_include=MedicationRequest:medication",
        "observations": f"Observation?patient={patient}&code={','.join(dict.fromkeys(codes))}"
        "&_sort=-date",
        "allergies": f"AllergyIntolerance?patient={patient}",
    }
