"""One-click suggestions: CDS Hooks actions whose FHIR resources are validated before they leave.

Actions follow CDS Hooks 2.0 "Action": delete by `resourceId` (not `resource`), create and update
with a whole resource. Every resource is checked with fhir.resources (R4B models) here, at the
edge, because an EHR applies it to the chart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from cds_hooks.cards import Suggestion
from cds_hooks.record import MedOrder


def validated(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The resource as JSON, after fhir.resources accepted it (raises on an invalid one)."""
    model = get_fhir_model_class(resource["resourceType"]).model_validate(dict(resource))
    return model.model_dump(mode="json", exclude_none=True)


def cancel(order: MedOrder, name: str = "cancel") -> Suggestion:
    """Remove the draft order from the ordering session."""
    return Suggestion(
        name=name,
        actions=(
            {
                "type": "delete",
                "description": f"Remove the draft order {order.ref}",
                "resourceId": order.ref,
            },
        ),
    )


def create(
    resource: Mapping[str, Any], description: str, name: str, recommended: bool = False
) -> Suggestion:
    return Suggestion(
        name=name,
        recommended=recommended,
        actions=({"type": "create", "description": description, "resource": validated(resource)},),
    )


def replace(
    order: MedOrder,
    resource: Mapping[str, Any],
    description: str,
    name: str,
    recommended: bool = False,
) -> Suggestion:
    """Update the draft order in place with a whole new version of it."""
    return Suggestion(
        name=name,
        recommended=recommended,
        actions=({"type": "update", "description": description, "resource": validated(resource)},),
    )
