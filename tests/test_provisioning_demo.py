"""The demo seed: a template per install method, each previewing valid XML, and one
pending request a new user can approve."""

from __future__ import annotations

import pytest

from domains.models import Team
from provisioning import demo, services
from provisioning.models import Method, RequestState, Template, VMRequest

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def test_seed_makes_each_method_and_a_pending_request(hosts, django_user_model):
    Team.objects.create(name="Platform", slug="platform")
    django_user_model.objects.create_user("vera")
    demo.seed([hosts.alpha, hosts.beta])
    demo.seed([hosts.alpha, hosts.beta])  # twice: nothing doubles
    assert set(Template.objects.values_list("method", flat=True)) == set(Method.values)
    assert VMRequest.objects.filter(state=RequestState.SUBMITTED).count() == 1
    for template in Template.objects.all():
        view = services.preview(template, hosts.alpha, "demo-1", 1, template.memory_mib)
        assert view.xml and not view.problems, (template.name, view.problems)
