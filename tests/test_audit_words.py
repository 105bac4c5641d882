"""Audit events in words on the activity page: a sentence per event (not a code), and
sign-ins that can be hidden."""

from __future__ import annotations

import pytest
from django.urls import reverse

from domains.models import Role
from domains.services import hosts as host_services
from provisioning import services as provisioning
from tests.helpers import client_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _events(client, **query) -> str:
    page = client.get(reverse("activity"), query).content.decode()
    return page[page.index("Audit events") :]


def test_each_event_is_a_sentence(people, hosts):
    client = client_for(people.root)  # signs in: an event too
    provisioning.set_quota(people.root, people.team_a, max_vcpus=16, max_memory_mib=16384)
    provisioning.set_quota(people.root, people.team_a, max_vcpus=16, max_memory_mib=32768)
    host_services.set_membership(people.root, people.team_a, people.nora_noteam, Role.OPERATOR)
    host_services.set_host_enabled(people.root, hosts.beta, False)
    page = _events(client)
    assert "root changed Team A&#x27;s quota: memory limit raised from 16384 to 32768 MiB." in page
    assert "root made nora_noteam operator in Team A." in page
    assert "root disabled host beta." in page
    assert "<td>quota</td>" in page and "quota_changed" not in page  # what it is about, in words


def test_sign_ins_can_be_hidden(people):
    client = client_for(people.root)
    client.post(reverse("login"), {"username": "nobody", "password": "wrong"})
    assert "Someone failed to sign in as “nobody”." in _events(client)
    quiet = _events(client, quiet="on")
    assert "failed to sign in" not in quiet and "login_failed" not in quiet
