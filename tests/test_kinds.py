"""The operation-kind registry: every kind complete, every table derived from it.

No daemon is needed: these read the registry, the URL configuration, Celery's task list
and the permission matrix's rows.
"""

from __future__ import annotations

import pytest
from django.urls import NoReverseMatch, reverse
from django.utils.functional import Promise

from domains import kinds
from domains.models import ACTION_ROLES, Domain, OperationKind, State
from tests.test_permission_matrix import CASES
from vmpanel.celery import app


def _registered_tasks() -> set[str]:
    app.loader.import_default_modules()  # what a worker imports at start
    return set(app.tasks)


def test_every_operation_kind_has_an_entry():
    assert set(kinds.KINDS) == {k.value for k in OperationKind}


@pytest.mark.parametrize("kind", sorted(kinds.KINDS))
def test_entry_is_complete(kind):
    spec = kinds.KINDS[kind]
    assert spec.kind == kind
    assert spec.role in ACTION_ROLES and spec.role != "view", "a change needs more than view"
    # The button's words are marked for translation and say something.
    assert isinstance(spec.label, Promise) and str(spec.label).strip()
    assert spec.task in _registered_tasks(), f"{spec.task} is not a Celery task"
    if spec.allowed is not kinds.always_allowed:
        assert "{name}" in spec.wrong_state, "a refusal for state names the domain"
    if spec.offered == kinds.PANEL:
        # A plain button calls its service; a form kind has its own page.
        assert not (spec.form and spec.service), "a form page or a service, not both"
        if not spec.form:
            assert callable(spec.service_function)
        else:
            reverse(spec.form, args=["alpha", "00000000-0000-0000-0000-000000000000"])
    for option in spec.options:
        assert not spec.form, "only a plain button posts check boxes"
        assert option.isidentifier()


@pytest.mark.parametrize("kind", sorted(kinds.KINDS))
def test_every_kind_has_a_permission_matrix_row(kind):
    spec = kinds.KINDS[kind]
    row = {
        kinds.PANEL: spec.form or f"domain_action:{kind}",
        kinds.IMAGE: "image_restore",
        kinds.TEMPLATE: "template_create",
        kinds.SNAPSHOT: f"domain_{kind}",
    }[spec.offered]
    assert row in CASES, f"no permission-matrix row {row!r} for {kind}"


def test_derived_tables():
    assert set(kinds.LONG_KINDS) == {"save", "restore", "managed_save", "migrate", "clone"}
    assert set(kinds.CONFIRM_KINDS) == {"destroy", "reset", "undefine"}
    assert "restore" not in kinds.BUTTON_KINDS and "provision" not in kinds.BUTTON_KINDS
    assert not set(kinds.BUTTON_KINDS) & set(kinds.FORM_KINDS)


def test_unknown_form_name_would_not_resolve():
    # The check above is not vacuous: a wrong URL name fails to reverse.
    with pytest.raises(NoReverseMatch):
        reverse("domain_no_such_form", args=["alpha", "x"])


def _domain(**fields) -> Domain:
    defaults = dict(name="d", state=State.SHUTOFF, libvirt_id=None, persistent=True)
    return Domain(**{**defaults, **fields})


def test_panel_actions_follow_role_and_state():
    off = _domain()
    running = _domain(state=State.RUNNING, libvirt_id=3)
    operate = frozenset({"view", "operate"})
    admin = frozenset(ACTION_ROLES)

    def kinds_of(domain, actions):
        return {spec.kind for spec in kinds.panel_actions(domain, actions)}

    assert kinds_of(off, frozenset({"view"})) == set()
    assert "start" in kinds_of(off, operate) and "shutdown" not in kinds_of(off, operate)
    assert {"shutdown", "save", "migrate", "resize"} <= kinds_of(running, operate)
    # Undefine and XML editing are for team admins.
    assert "undefine" not in kinds_of(off, operate) and "undefine" in kinds_of(off, admin)
    assert "edit_xml" in kinds_of(off, admin)
    assert "edit_xml" not in kinds_of(_domain(persistent=False), admin)
    # Restore is offered beside each image, not as a button.
    assert "restore" not in kinds_of(off, admin)


def test_wrong_state_message_names_the_domain_and_its_state():
    spec = kinds.KINDS["resume"]
    message = kinds.wrong_state_message(spec, _domain(name="web1"))
    assert message == "web1 is shut off; only a paused VM can be resumed."
