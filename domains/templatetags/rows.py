"""`{% domain_row %}` and `{% operation_row %}`: the rows of the long tables, rendered once
per content (see `domains.rows`)."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from domains.models import Domain, Operation
from domains.rows import DomainRow, OperationRow, rendered, row_actions

register = template.Library()


@register.simple_tag
def domain_row(domain: Domain | dict, team_actions=None) -> SafeString:
    """`<tr>` of the domain list for `domain` (a row or its DomainRow.VALUES). With
    `team_actions` (team name → the viewer's actions in it), the row has a check box for
    acting on several and the buttons its state and the viewer's role allow."""
    row = DomainRow.of_values(domain) if isinstance(domain, dict) else DomainRow.of(domain)
    if team_actions is None:
        return rendered("domains/_domain_row.html", row)
    actions = team_actions.get(row.team, frozenset())
    return rendered(
        "domains/_domain_row.html", row, selectable=True,
        pickable="operate" in actions and row.gone_at is None,
        buttons=row_actions(row, actions),
    )  # fmt: skip


@register.simple_tag
def operation_row(op: Operation | dict, show_target: bool = False) -> SafeString:
    """`<tr>` of an operations table for `op` (a row or its OperationRow.VALUES), with its
    domain, host and team if asked."""
    if isinstance(op, dict):
        row = OperationRow.of_values(op, bool(show_target))
    else:
        row = OperationRow.of(op, bool(show_target))
    return rendered("domains/_operation_row.html", row)
