"""The shared test helpers themselves: what the HTTP tests will lean on."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user
from django.http import HttpRequest

from domains.models import Domain, Role
from tests.helpers import client_for, wait_for


@pytest.mark.django_db
def test_client_for_is_signed_in(people):
    client = client_for(people.olga_operator)

    request = HttpRequest()
    request.session = client.session
    assert get_user(request) == people.olga_operator


@pytest.mark.django_db
def test_named_people(people):
    assert people.root.is_superuser and not people.root.memberships.exists()
    roles = {
        (m.user.username, m.team.slug, m.role)
        for m in people.team_a.memberships.select_related("user")
    }
    assert roles == {
        ("alice_admin", "team-a", Role.ADMIN),
        ("olga_operator", "team-a", Role.OPERATOR),
        ("victor_viewer", "team-a", Role.VIEWER),
    }
    assert [m.user for m in people.team_b.memberships.all()] == [people.bob_b]
    assert not people.nora_noteam.memberships.exists()
    assert people.nora_noteam.check_password("password")


@pytest.mark.integration
@pytest.mark.django_db
def test_make_domain_gives_a_team_a_row(make_domain, hosts):
    domain = make_domain(state="paused", autostart=True)

    assert isinstance(domain, Domain) and domain.host == hosts.alpha
    assert domain.team.slug == "team-a" and domain.autostart
    assert domain.name.startswith("vm-")


def test_wait_for_returns_the_value_or_fails():
    calls = iter([0, None, "done"])
    assert wait_for(lambda: next(calls), timeout=1, interval=0) == "done"
    with pytest.raises(AssertionError, match="not true within"):
        wait_for(lambda: False, timeout=0.05, what="never")
