"""The rows of the domain list and the activity page are kept rendered per content
(`domains.rows`): whatever changes in a row's facts shows at the next request — a kept row
is never a stale one; and neither page makes a query per row."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from domains.models import Domain, Operation, OperationStatus, State
from tests.helpers import client_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _row_of(html: str, marker: str) -> str:
    start = html.rindex("<tr", 0, html.index(marker))
    return html[start : html.index("</tr>", start)]


def test_a_list_row_shows_what_changed_since_it_was_kept(people, make_domain):
    domain = make_domain(state="running")
    client = client_for(people.olga_operator)
    first = _row_of(client.get(reverse("domain_list")).content.decode(), domain.name)
    assert "running" in first and "Team A" in first

    Domain.objects.filter(pk=domain.pk).update(
        state=State.PAUSED, state_reason="user", libvirt_id=None, snapshot_count=3
    )
    domain.host.last_error = "Connection refused"
    domain.host.save(update_fields=["last_error"])
    row = _row_of(client.get(reverse("domain_list")).content.decode(), domain.name)
    assert "paused" in row and "running" not in row
    assert "host not answering" in row and "Connection refused" in row
    assert '<td class="num">3</td>' in row


def test_an_activity_row_shows_the_operation_as_it_is_now(people, make_domain):
    domain = make_domain(state="running")
    op = Operation.objects.create(
        kind="start", user=people.olga_operator, domain=domain, host=domain.host,
        domain_uuid=domain.uuid, domain_name=domain.name, team=domain.team,
        status=OperationStatus.RUNNING, message="Starting",
    )  # fmt: skip
    client = client_for(people.olga_operator)
    marker = f">#{op.pk}<"
    row = _row_of(client.get(reverse("activity")).content.decode(), marker)
    assert "Starting" in row and "running" in row

    Operation.objects.filter(pk=op.pk).update(
        status=OperationStatus.FAILED, message="The host does not answer.", error="EOF",
        finished_at=timezone.now(),
    )  # fmt: skip
    row = _row_of(client.get(reverse("activity")).content.decode(), marker)
    assert "failed" in row and "The host does not answer." in row and "EOF" in row
    assert "Starting" not in row
    # The domain's own page lists it the same way.
    page = client.get(reverse("domain_detail", args=[domain.host.name, domain.uuid]))
    assert "The host does not answer." in _row_of(page.content.decode(), marker)


def _queries(client, url) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured.captured_queries)


def _operations(people, domain, count: int) -> None:
    Operation.objects.bulk_create(
        Operation(
            kind="start", user=people.olga_operator, domain=domain, host=domain.host,
            domain_uuid=domain.uuid, domain_name=domain.name, team=domain.team,
            status=OperationStatus.SUCCEEDED, message=f"Started {i}.",
        )
        for i in range(count)
    )  # fmt: skip


@pytest.mark.parametrize("who", ["olga_operator", "alice_admin", "root"])
def test_the_list_and_activity_pages_cost_the_same_queries_for_many_rows(who, people, make_domain):
    """A handful of queries whatever the number of rows: none per row."""
    client = client_for(getattr(people, who))
    first = make_domain(state="running")
    _operations(people, first, 2)
    few = _queries(client, reverse("domain_list")), _queries(client, reverse("activity"))
    for _ in range(6):
        _operations(people, make_domain(state="running"), 5)
    many = _queries(client, reverse("domain_list")), _queries(client, reverse("activity"))
    assert many == few, (few, many)
    assert max(many) <= 8, many
