"""Actions where people look: start, shut down and reboot from a row of the list, and one
action on several ticked domains (one operation each, each outcome said, refusals on record),
through HTTP and the real worker."""

from __future__ import annotations

import pytest
from django.urls import reverse

from domains.models import Operation, OperationKind, OperationStatus
from tests.helpers import client_for, wait_finished

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("celery_worker", "watcher_beat"),
]


def _row(html: str, name: str) -> str:
    start = html.rindex("<tr", 0, html.index(f">{name}<"))
    return html[start : html.index("</tr>", start)]


def test_rows_offer_what_the_role_and_state_allow(people, make_domain):
    make_domain(name="row-on", state="running")
    make_domain(name="row-off", state="shutoff")
    page = client_for(people.olga_operator).get(reverse("domain_list")).content.decode()
    on, off = _row(page, "row-on"), _row(page, "row-off")
    assert 'name="pick"' in on and 'name="pick"' in off
    assert "/do/shutdown/" in on and "/do/reboot/" in on and "/do/start/" not in on
    assert "/do/start/" in off and "/do/shutdown/" not in off
    # A viewer sees the same rows, with nothing to tick or press.
    page = client_for(people.victor_viewer).get(reverse("domain_list")).content.decode()
    assert 'name="pick"' not in page and "/do/start/" not in page and "Do it" not in page


def test_a_row_button_acts_and_comes_back_to_the_list(people, make_domain, settings):
    settings.VMPANEL_QUICK_WAIT_SECONDS = 15
    domain = make_domain(name="row-start", state="shutoff")
    client = client_for(people.olga_operator)
    url = reverse("domain_action", args=[domain.host.name, domain.uuid, "start"])
    response = client.post(url, {"next": "/domains/?f=inactive", "action": "start"})
    assert response.status_code == 303 and response["Location"] == "/domains/?f=inactive"
    op = Operation.objects.get(domain=domain, kind=OperationKind.START)
    assert wait_finished(op).status == OperationStatus.SUCCEEDED
    # Not somewhere else, whatever the form says.
    response = client.post(url.replace("start", "shutdown"), {"next": "https://evil.example/"})
    assert response["Location"].startswith(
        reverse("domain_detail", args=[domain.host.name, domain.uuid])
    )


def test_several_ticked_domains_each_get_an_operation_or_a_reason(people, make_domain):
    a = make_domain(name="bulk-a", state="shutoff")
    b = make_domain(name="bulk-b", state="shutoff")
    c = make_domain(name="bulk-c", state="running")  # already running: refused, alone
    client = client_for(people.olga_operator)
    picks = [f"{d.host.name}/{d.uuid}" for d in (a, b, c)] + ["alpha/not-a-uuid"]
    response = client.post(
        reverse("domain_bulk"), {"action": "start", "pick": picks, "next": "/domains/"}
    )
    assert response.status_code == 303 and response["Location"] == "/domains/"
    ops = {op.domain.name: op for op in Operation.objects.filter(kind=OperationKind.START)}
    assert set(ops) == {"bulk-a", "bulk-b", "bulk-c"}
    assert ops["bulk-c"].status == OperationStatus.REFUSED
    for name in ("bulk-a", "bulk-b"):
        assert wait_finished(ops[name]).status == OperationStatus.SUCCEEDED
    page = client.get("/domains/").content.decode()
    assert page.count("start queued (operation #") == 2
    assert "bulk-c: bulk-c is running" in page
    assert "alpha/not-a-uuid: no such VM." in page
