"""The template form for people: titled sections, words for every field, the install
method's own fields only, each rule between fields beside the field it concerns (and
nothing saved), and every change on the activity page as a sentence with before and
after."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from django.forms.models import model_to_dict
from django.urls import reverse

from domains.models import AuditEvent
from provisioning import services
from provisioning.forms import TEMPLATE_SECTIONS, TemplateForm
from provisioning.models import Method, Template, VMRequest
from tests.helpers import browser_log_in, client_for, template_form_data
from tests.test_accessibility import _violations
from tests.test_provisioning_create import make_template

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

SECTION_TITLES = [
    "Basics", "Resources", "Firmware and boot", "Install method", "Disks", "Network",
    "Devices", "Limits for requests",
]  # fmt: skip


def _data(hosts, **more) -> dict:
    return template_form_data(hosts.alpha.pk, **more)


def _beside(page: str, field: str) -> str:
    """The messages shown beside `field` (its error list), as text."""
    match = re.search(rf'<ul class="errorlist" id="id_{field}_error">(.*?)</ul>', page, re.S)
    return re.sub(r"<[^>]+>", " ", match[1]) if match else ""


def _nothing_on_record() -> bool:
    return not AuditEvent.objects.filter(kind__startswith="template_").exists()


# --- the page ---------------------------------------------------------------------------


def test_sections_in_order_with_words_for_every_field(people, hosts):
    page = client_for(people.root).get(reverse("template_new")).content.decode()

    legends = re.findall(r'<fieldset class="section">\s*<legend>([^<]+)</legend>', page)
    assert legends == SECTION_TITLES
    assert "Maximum memory (MiB)" in page
    assert "The most memory this VM can be given while running without a restart." in page
    # Django's words from the column names are gone.
    for raw in ("Max memory mib", "Hotplug memory mib", "Vcpus max", "Net type", "Disk gib"):
        assert raw not in page
    # Every field of the template is in one section, with a line of help.
    form = TemplateForm()
    placed = [name for _title, names in TEMPLATE_SECTIONS for name in names]
    assert len(placed) == len(set(placed))
    editable = {
        f.name for f in Template._meta.get_fields()
        if f.concrete and f.editable and f.name not in ("id", "created_at")
    }  # fmt: skip
    assert set(form.fields) == editable
    for name, field in form.fields.items():
        assert field.help_text, f"{name} has no help"
        assert "_" not in str(field.label), f"{name}: {field.label}"


def test_each_method_shows_only_its_own_fields(people, hosts):
    template = make_template(hosts, Method.KERNEL)
    page = client_for(people.root).get(reverse("template_edit", args=[template.pk]))
    text = page.content.decode()

    section = text.split('<div class="method-choices">', 1)[1].split("</fieldset>", 1)[0]
    options = section.split('<div class="method-option">')[1:]
    assert len(options) == 4
    owned = {
        re.search(r'value="(\w+)"', option)[1]:
            set(re.findall(r'name="(\w+)"', option)) - {"method"}
        for option in options
    }  # fmt: skip
    assert owned == {
        "cdrom": {"iso_path"}, "pxe": set(), "kernel": {"kernel", "initrd", "cmdline"},
        "disk": {"base_image"},
    }  # fmt: skip
    # The saved method is the one chosen; the stylesheet hides the others' fields.
    assert re.search(r'value="kernel"[^>]*checked', text)
    css = Path("static/css/vmpanel.css").read_text()
    assert ".method-option > input:not(:checked) ~ .method-fields { display: none; }" in css


# --- rules between fields -----------------------------------------------------------------

RULES = {
    # name: (changes, the field beside which, words of the message)
    "ISO install without its image": ({"method": "cdrom"}, "iso_path", "ISO image"),
    "kernel boot without a kernel": (
        {"method": "kernel", "initrd": "/srv/initrd"}, "kernel", "path of the kernel"),
    "kernel boot without an initrd": (
        {"method": "kernel", "kernel": "/srv/vmlinuz"}, "initrd", "initial RAM disk"),
    "existing disk without its image": ({"method": "disk"}, "base_image", "path of that image"),
    "PXE without a network": ({"net_type": ""}, "net_type", "boots from the network"),
    "more vCPUs at start than the maximum": (
        {"vcpus_current": 3, "vcpus_max": 2, "max_vcpus": 4}, "vcpus_current",
        "at most its maximum vCPUs (2)"),
    "more memory in use than the memory": (
        {"current_memory_mib": 1024}, "current_memory_mib", "more than the memory (512 MiB)"),
    "host CPUs with automatic placement": (
        {"cpuset": "0-1", "vcpu_placement": "auto"}, "cpuset", "automatic placement"),
    "host CPUs backwards (the spec's rule)": ({"cpuset": "3-1"}, "cpuset", "runs backwards"),
    "maximum memory below the memory": (
        {"hotplug_memory_mib": 256, "memory_slots": 2}, "hotplug_memory_mib",
        "cannot be less than memory (512 MiB)"),
    "memory slots without a maximum memory": (
        {"memory_slots": 4}, "memory_slots", "need a maximum memory for hot-plug"),
    "a request's most memory past the maximum memory": (
        {"hotplug_memory_mib": 768, "memory_slots": 2}, "max_memory_mib",
        "A request for the most it may ask would be refused"),
    "UEFI without its firmware file": ({"firmware": "uefi"}, "loader", "needs a loader"),
    "UEFI firmware file not a path": (
        {"firmware": "uefi", "loader": "OVMF_CODE.fd"}, "loader", "absolute path"),
    "UEFI settings template not a path": (
        {"firmware": "uefi", "loader": "/usr/share/OVMF/OVMF_CODE.fd",
         "nvram_template": "vars.fd"}, "nvram_template", "absolute path"),
    "kernel not a path": (
        {"method": "kernel", "kernel": "vmlinuz", "initrd": "/srv/initrd"}, "kernel",
        "absolute path"),
    "ISO image not a path": ({"method": "cdrom", "iso_path": "debian.iso"}, "iso_path",
                             "absolute path"),
    "bridge name with a space": (
        {"net_type": "bridge", "net_source": "br 0"}, "net_source", "host bridge"),
    "network card model": ({"net_model": "vir tio"}, "net_model", "not a model name"),
    "boot menu wait too long": (
        {"boot_menu": "on", "boot_menu_timeout_ms": 70000}, "boot_menu_timeout_ms",
        "at most 65535"),
    "fewest vCPUs above the most": (
        {"min_vcpus": 3, "max_vcpus": 2}, "min_vcpus", "more than the most (2)"),
    "least memory above the most": (
        {"min_memory_mib": 2048, "max_memory_mib": 1024}, "min_memory_mib",
        "more than the most (1024 MiB)"),
    "template's vCPUs below what a request may ask": (
        {"min_vcpus": 2, "max_vcpus": 4}, "min_vcpus", "own 1 vCPU must"),
    "template's memory above what a request may ask": (
        {"max_memory_mib": 400}, "max_memory_mib", "own 512 MiB"),
}  # fmt: skip


@pytest.mark.parametrize("rule", list(RULES))
def test_each_rule_says_its_message_beside_its_field_and_saves_nothing(rule, people, hosts):
    changes, field, words = RULES[rule]
    template = make_template(hosts, Method.PXE, memory_mib=512, current_memory_mib=512,
                             max_memory_mib=1024, iso_path="", kernel="", initrd="",
                             base_image="")  # fmt: skip
    before = model_to_dict(template)

    response = client_for(people.root).post(
        reverse("template_edit", args=[template.pk]),
        _data(hosts, name=template.name, **changes),
    )

    page = response.content.decode()
    assert response.status_code == 200
    assert words in _beside(page, field), (rule, response.context["form"].errors)
    assert "Not saved: see the messages beside the fields." in page
    template.refresh_from_db()
    assert model_to_dict(template) == before
    assert _nothing_on_record()


def test_the_other_methods_fields_are_not_required(people, hosts):
    response = client_for(people.root).post(
        reverse("template_new"), _data(hosts, method="kernel", kernel="/srv/vmlinuz",
                                       initrd="/srv/initrd.gz")
    )  # fmt: skip

    assert response.status_code == 303
    saved = Template.objects.get(name="office-tpl")
    assert (saved.method, saved.iso_path, saved.base_image) == ("kernel", "", "")


def test_a_new_template_needs_a_method(people, hosts):
    data = _data(hosts)
    del data["method"]
    response = client_for(people.root).post(reverse("template_new"), data)
    assert "This field is required." in _beside(response.content.decode(), "method")
    assert not Template.objects.exists() and _nothing_on_record()


def test_the_service_refuses_what_the_form_refuses(people, hosts):
    template = make_template(hosts, Method.CDROM, iso_path="")
    with pytest.raises(services.ActionRefused, match="ISO image"):
        services.save_template(people.root, template, [hosts.alpha])
    assert _nothing_on_record()


# --- on record, in words ------------------------------------------------------------------


def _events(client) -> str:
    page = client.get(reverse("activity")).content.decode()
    return page[page.index("Audit events") :]


def test_an_edit_is_on_the_activity_page_with_before_and_after(people, hosts):
    template = make_template(hosts, Method.PXE, name="Small Debian", memory_mib=1024,
                             current_memory_mib=1024)  # fmt: skip
    client = client_for(people.root)
    data = {k: v for k, v in model_to_dict(template).items() if v is not None}
    data.update(memory_mib=2048, current_memory_mib=2048, vnc="", hosts=[hosts.alpha.pk])

    response = client.post(reverse("template_edit", args=[template.pk]), data)

    assert response.status_code == 303
    event = AuditEvent.objects.get(kind="template_changed")
    assert event.detail["before"]["memory_mib"] == 1024
    assert event.detail["after"]["memory_mib"] == 2048
    assert "name" not in event.detail["after"]  # only what changed
    page = _events(client)
    assert (
        "root changed template Small Debian: hosts alpha, beta → alpha; memory 1024 MiB → "
        "2048 MiB; memory in use at start 1024 MiB → 2048 MiB; screen on → off."
    ) in page


def test_adding_and_deleting_a_template_are_on_the_activity_page(people, hosts):
    client = client_for(people.root)
    client.post(reverse("template_new"), _data(hosts))
    template = Template.objects.get(name="office-tpl")

    confirm = client.get(reverse("template_delete", args=[template.pk]))
    assert "Delete template office-tpl?" in confirm.content.decode()
    response = client.post(reverse("template_delete", args=[template.pk]))

    assert response.status_code == 303 and not Template.objects.exists()
    event = AuditEvent.objects.get(kind="template_deleted")
    assert event.detail["before"]["memory_mib"] == 512  # all it held
    page = _events(client)
    assert "root added template office-tpl." in page
    assert "root deleted template office-tpl." in page


def test_a_template_requests_were_made_from_stays(people, hosts):
    template = make_template(hosts, Method.PXE)
    VMRequest.objects.create(
        team=people.team_a, requester=people.victor_viewer, template=template, name="r1",
        vcpus=1, memory_mib=512, purpose="t",
    )  # fmt: skip

    response = client_for(people.root).post(reverse("template_delete", args=[template.pk]))

    assert response.status_code == 409
    assert "1 request was made from it" in response.content.decode()
    assert Template.objects.filter(pk=template.pk).exists()
    assert _nothing_on_record()


# --- in a browser, without JavaScript -----------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(os.environ.get("VMPANEL_SHOTS", "/tmp/vmpanel-shots"))


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} is missing")
def test_choosing_a_method_shows_its_fields_without_javascript(browser, live_server, people,
                                                               hosts):  # fmt: skip
    SHOTS.mkdir(parents=True, exist_ok=True)
    template = make_template(hosts, Method.CDROM, name="Small Debian")
    for width in (1366, 390):
        context = browser.new_context(
            java_script_enabled=False, viewport={"width": width, "height": 900}
        )
        page = context.new_page()
        browser_log_in(page, live_server.url, "root")
        page.goto(f"{live_server.url}{reverse('template_new')}")
        assert not page.is_visible("#id_iso_path") and not page.is_visible("#id_kernel")
        page.check("#id_method_2")  # direct kernel boot
        assert page.is_visible("#id_kernel") and page.is_visible("#id_initrd")
        assert not page.is_visible("#id_iso_path") and not page.is_visible("#id_base_image")
        # Nothing scrolls sideways, even on a phone.
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        page.screenshot(path=str(SHOTS / f"template-new-{width}.png"), full_page=True)

        page.goto(f"{live_server.url}{reverse('template_edit', args=[template.pk])}")
        assert page.is_visible("#id_iso_path") and not page.is_visible("#id_kernel")
        page.screenshot(path=str(SHOTS / f"template-edit-{width}.png"), full_page=True)
        # A rule broken: the message beside its field, the text as typed.
        page.fill("#id_current_memory_mib", "4096")
        page.fill("#id_iso_path", "")
        page.click("button[type=submit]:has-text('Save')")
        assert page.is_visible("#id_current_memory_mib_error")
        assert page.is_visible("#id_iso_path_error")
        assert page.input_value("#id_current_memory_mib") == "4096"
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        page.screenshot(path=str(SHOTS / f"template-error-{width}.png"), full_page=True)
        context.close()
        # axe (tests/test_accessibility.py) finds nothing serious, the errors shown too.
        context = browser.new_context(bypass_csp=True, viewport={"width": width, "height": 900})
        page = context.new_page()
        browser_log_in(page, live_server.url, "root")
        page.goto(f"{live_server.url}{reverse('template_edit', args=[template.pk])}")
        assert _violations(page) == []
        page.fill("#id_current_memory_mib", "4096")
        page.click("button[type=submit]:has-text('Save')")
        assert page.is_visible("#id_current_memory_mib_error")
        assert _violations(page) == []
        context.close()
    assert Template.objects.get(pk=template.pk).current_memory_mib == 512
