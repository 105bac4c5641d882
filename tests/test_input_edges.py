"""Issue 8, item 5: the edges of input. Numbers are ASCII digits within a column's range,
keys out of any range are form errors (never a 500), an approval's host is one of the
template's, an address's host part must be the object's, NUL bytes and other characters
no database or XML parser takes are form errors, and a proxy's request id is checked.

Every test function here failed on the code before the fix (a few of their parameters are
guards that passed already); tests/test_hostile_input.py then throws a battery of bad
values at every form of the panel."""

from __future__ import annotations

import inspect

import pytest
from django import forms
from django.urls import reverse

import domains.forms
import provisioning.forms
from domains.models import AuditEvent, Operation, OperationStatus, SavedImage
from provisioning.models import Quota, RequestState, Template, VMRequest
from tests.helpers import client_for, template_form_data
from vmpanel import fields as panel_fields

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

BIG = str(10**22)
REQUEST_ID_MAX = Operation._meta.get_field("request_id").max_length
FULL_WIDTH_12 = "１２"


def _form_classes():
    for module in (domains.forms, provisioning.forms):
        for name, obj in vars(module).items():
            mine = inspect.isclass(obj) and obj.__module__ == module.__name__
            if mine and issubclass(obj, forms.BaseForm):
                yield f"{module.__name__}.{name}", obj


@pytest.mark.parametrize(("name", "form_class"), list(_form_classes()))
def test_every_form_uses_the_panels_number_and_choice_fields(name, form_class):
    """One IntegerField (ASCII digits, a column's range) and choice fields that refuse keys
    out of range, for declared fields and those model forms derive alike."""
    for field_name, field in form_class.base_fields.items():
        where = f"{name}.{field_name}"
        if isinstance(field, forms.IntegerField):
            assert isinstance(field, panel_fields.IntegerField), where
        if isinstance(field, forms.ModelMultipleChoiceField):
            assert isinstance(field, panel_fields.ModelMultipleChoiceField), where
        elif isinstance(field, forms.ModelChoiceField):
            assert isinstance(field, panel_fields.ModelChoiceField), where


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("12", True),
        (" 12 ", True),
        ("-3", True),
        ("+3", True),
        (FULL_WIDTH_12, False),
        ("١٢", False),  # Arabic-Indic digits
        ("12.0", False),
        ("1e3", False),
        ("0x10", False),
        ("1_000", False),
        ("\u200f12", False),
        ("12\x00", False),
        (BIG, False),
        (str(2**31), False),
        (str(-(2**31) - 1), False),
        ("9" * 5000, False),
    ],
)
def test_integer_field_takes_ascii_digits_in_range(value, ok):
    field = panel_fields.IntegerField(required=False)
    if ok:
        assert field.clean(value) == int(value)
    else:
        with pytest.raises(forms.ValidationError):
            field.clean(value)


def _template_data(rows, **more) -> dict:
    return template_form_data(rows.alpha.pk, name="edge-tpl", **more)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hosts", [BIG]),  # OverflowError on SQLite, a 500, before
        ("hosts", [str(2**63)]),
        ("hosts", ["-1"]),
        ("memory_mib", FULL_WIDTH_12),  # a 12 MiB template, before
        ("memory_mib", str(2**40)),  # beyond PostgreSQL's integer column
        ("disk_gib", BIG),
        ("bios_reboot_timeout_ms", str(-(2**40))),
    ],
)
def test_template_form_refuses_numbers_out_of_range(people, hosts, field, value):
    client = client_for(people.root)
    client.raise_request_exception = False

    response = client.post(reverse("template_new"), _template_data(hosts, **{field: value}))

    assert response.status_code == 200
    assert field in response.context["form"].errors
    assert not Template.objects.exists()
    assert not AuditEvent.objects.exclude(kind="login").exists()


@pytest.mark.parametrize("value", [FULL_WIDTH_12, BIG, "-1", "1e3"])
def test_quota_form_refuses_what_is_not_a_number(people, value):
    client = client_for(people.root)
    data = {"max_domains": value, "max_vcpus": 1, "max_memory_mib": 1, "max_disk_gib": 1}

    response = client.post(reverse("team_quota", args=["team-a"]), data)

    assert response.status_code == 200
    assert "max_domains" in response.context["form"].errors
    assert not Quota.objects.exists()


def test_a_single_choice_does_not_read_full_width_digits_as_a_key(people, hosts):
    form = provisioning.forms.RequestForm(
        people.alice_admin,
        {
            "team": "".join(chr(ord(c) + 0xFEE0) for c in str(people.team_a.pk)),
            "template": BIG,
            "name": "x",
            "vcpus": "1",
            "memory_mib": "1",
            "purpose": "p",
        },
    )
    assert not form.is_valid()
    assert set(form.errors) == {"team", "template"}


# --- an approval's host is one of the template's -------------------------------------


@pytest.fixture
def submitted(people, hosts):
    template = Template.objects.create(name="tpl", method="pxe", max_vcpus=4)
    template.hosts.set([hosts.alpha])
    return VMRequest.objects.create(
        team=people.team_a, requester=people.victor_viewer, template=template,
        name="asked-1", vcpus=1, memory_mib=256, purpose="edges",
    )  # fmt: skip


@pytest.mark.parametrize("host", ["beta", BIG, "nonsense", FULL_WIDTH_12])
def test_approval_to_a_host_outside_the_template_is_refused(people, hosts, submitted, host):
    """Before, a host outside the template (or no host at all) approved the request onto
    the template's first host."""
    value = {"beta": lambda: hosts.beta.pk}.get(host, lambda: host)()

    response = client_for(people.alice_admin).post(
        reverse("request_approve", args=[submitted.pk]), {"host": value}
    )

    assert response.status_code == 400
    assert "host" in response.context["approve_form"].errors
    assert VMRequest.objects.get(pk=submitted.pk).state == RequestState.SUBMITTED
    assert not Operation.objects.exists()
    assert not AuditEvent.objects.exclude(kind="login").exists()


def test_a_bad_host_from_a_viewer_is_still_a_403(people, hosts, submitted):
    response = client_for(people.victor_viewer).post(
        reverse("request_approve", args=[submitted.pk]), {"host": hosts.beta.pk}
    )
    assert response.status_code == 403
    assert VMRequest.objects.get(pk=submitted.pk).state == RequestState.SUBMITTED


# --- the host part of an address must be the object's --------------------------------


def test_forgetting_an_image_under_another_hosts_address_is_a_404(people, make_domain):
    domain = make_domain("alpha", state="shutoff")
    image = SavedImage.objects.create(
        host=domain.host, path="/tmp/edges/x.save", domain=domain, domain_uuid=domain.uuid,
        domain_name=domain.name, team=domain.team,
    )  # fmt: skip
    client = client_for(people.olga_operator)

    for other in ("beta", "nowhere"):
        response = client.post(reverse("image_forget", args=[other, image.pk]))
        assert response.status_code == 404, other
    assert SavedImage.objects.filter(pk=image.pk).exists()
    assert not AuditEvent.objects.exclude(kind="login").exists()

    response = client.post(reverse("image_forget", args=["alpha", image.pk]))
    assert response.status_code == 303
    assert not SavedImage.objects.filter(pk=image.pk).exists()


# --- NUL bytes and characters XML cannot hold ------------------------------------------


@pytest.fixture
def save_folder(hosts):
    hosts.alpha.save_dir = "/tmp/vmpanel-edges-save"
    hosts.alpha.save(update_fields=["save_dir"])


@pytest.mark.parametrize("name", ["ok\x00name", "x" * 101])
def test_a_save_name_that_is_no_name_is_a_form_error(people, make_domain, save_folder, name):
    """Before, the raw value went to the service and its refusal put the NUL byte into an
    Operation's JSON parameters, which PostgreSQL refuses (a 500 there)."""
    domain = make_domain("alpha", state="running")

    response = client_for(people.olga_operator).post(
        reverse("domain_save", args=["alpha", domain.uuid]), {"image_name": name}
    )

    assert response.status_code == 400
    assert "image_name" in response.context["form"].errors
    assert not Operation.objects.exists()


@pytest.mark.parametrize("bad", ["\x00", "\x01", "\x1b", "\ufffe"])
@pytest.mark.parametrize("button", ["preview", "save"])
def test_xml_with_characters_xml_cannot_hold_is_a_form_error(people, make_domain, bad, button):
    """Before, the raw text went on and libxml's parse error answered (a refusal on record
    when saving); now the form refuses it before any service is asked."""
    domain = make_domain("alpha", state="shutoff")
    client = client_for(people.alice_admin)
    client.raise_request_exception = False
    url = reverse("domain_xml_edit", args=["alpha", domain.uuid])
    xml = client.get(url).context["form"].initial["xml"]

    response = client.post(url, {"xml": xml.replace("</name>", f"{bad}</name>", 1), button: "1"})

    assert response.status_code == 400
    assert "xml" in response.context["form"].errors
    assert not Operation.objects.exists()


# --- the request id from a proxy ------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("req-1.a_B", "req-1.a_B"),
        ("r" * 200, "r" * REQUEST_ID_MAX),  # cut to the column, not a DataError on PostgreSQL
        ("two words", None),
        ("evil\r\nSet-Cookie: x=1", None),
        ("<script>", None),
        ("é", None),
        ("", None),
    ],
)
def test_request_id_is_checked_and_cut_to_the_column(people, make_domain, given, kept):
    domain = make_domain("alpha", state="running")
    client = client_for(people.victor_viewer)  # a viewer: the refusal is on record

    response = client.post(
        reverse("domain_action", args=["alpha", domain.uuid, "suspend"]),
        headers={"X-Request-Id": given},
    )

    assert response.status_code == 403
    op = Operation.objects.get(status=OperationStatus.REFUSED)
    assert op.request_id == response["X-Request-Id"]
    if kept is None:
        assert len(op.request_id) == 16 and op.request_id != given
    else:
        assert op.request_id == kept


# --- what goes on record fits its column -------------------------------------------------


def test_an_audit_summary_is_cut_to_its_column(people):
    """A summary past its 500-character column (a template's changed fields, say) is what
    SQLite stores and PostgreSQL refuses (a DataError, a 500): it is cut; the detail keeps
    everything."""
    from domains.services.common import audit

    event = audit("template_changed", people.root, "t" * 100 + ": " + "x, " * 200, n=1)

    limit = AuditEvent._meta.get_field("summary").max_length
    assert len(event.summary) == limit and event.summary.endswith("…")
    assert event.summary.startswith("t" * 100 + ": ") and event.detail == {"n": 1}
