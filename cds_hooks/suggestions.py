"""One-click suggestions as the rules build them: plain CDS Hooks actions, not yet validated.

Actions follow CDS Hooks 2.0 "Action": delete by `resourceId` (not `resource`), create and update
with a whole resource. The resources are checked with fhir.resources at the card edge
(`cards.card_for`), so that a resource the EHR's own bad data makes invalid costs only that
suggestion, never the rule's finding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cds_hooks.cards import Suggestion
from cds_hooks.record import MedOrder


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
        actions=({"type": "create", "description": description, "resource": dict(resource)},),
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
        actions=({"type": "update", "description": description, "resource": dict(resource)},),
    )
