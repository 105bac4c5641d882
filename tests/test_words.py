"""Issue 13, item 1: the panel speaks to office staff. The words people read on the main
pages (not the XML, not names) say "virtual machine" or "VM", never libvirt's "domain",
"transient", "undefine" or "managed save"; libvirt's own terms appear only where an admin
chooses them (the migration form's Advanced fold, the XML editor)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from domains.models import Domain
from tests.helpers import client_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Said to people only in the panel's own words.
LIBVIRT_WORDS = re.compile(r"\b(domains?|transient|undefined?|managed[ -]save|persistent)\b", re.I)


class _VisibleText(HTMLParser):
    """The text a reader sees: no script, style, code, XML or form values; with the
    labels of buttons and options, which people read too."""

    HIDDEN = {"script", "style", "pre", "code", "textarea", "template"}

    def __init__(self):
        super().__init__()
        self.depth = 0
        self.chunks: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in self.HIDDEN:
            self.depth += 1
        attrs = dict(attrs)
        for name in ("title", "aria-label", "placeholder"):
            if attrs.get(name) and not self.depth:
                self.chunks.append(attrs[name])

    def handle_endtag(self, tag):
        if tag in self.HIDDEN and self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if not self.depth:
            self.chunks.append(data)


def visible_text(html: str, reader: type[_VisibleText] = _VisibleText) -> str:
    parser = reader()
    parser.feed(html)
    return " ".join(" ".join(parser.chunks).split())


def test_visible_text_skips_what_people_do_not_read():
    html = '<p>A VM</p><pre>&lt;domain type="kvm"&gt;</pre><script>domain()</script>'
    assert visible_text(html) == "A VM"
    assert LIBVIRT_WORDS.search(visible_text("<p>the domain</p>"))


def test_main_pages_speak_of_virtual_machines(people, make_domain):
    domain = make_domain(state="running")
    make_domain(state="shutoff", persistent=True)
    Domain.objects.filter(pk=domain.pk).update(has_managed_save=False)
    detail = f"/domains/{domain.host.name}/{domain.uuid}"
    pages = {
        "olga_operator": [
            "/domains/", f"{detail}/", f"{detail}/migrate/", f"{detail}/resize/",
            f"{detail}/save/", f"{detail}/snapshots/", "/activity/", "/requests/",
            "/requests/new/", "/notifications/",
        ],
        "alice_admin": [f"{detail}/confirm/undefine/", "/teams/", "/templates/"],
        "root": ["/hosts/", f"/hosts/{domain.host.name}/"],
    }  # fmt: skip
    for who, urls in pages.items():
        client = client_for(getattr(people, who))
        for url in urls:
            response = client.get(url)
            assert response.status_code == 200, url
            text = visible_text(response.content.decode()).replace(domain.name, "")
            found = LIBVIRT_WORDS.findall(text)
            assert not found, (who, url, found, text[:3000])
