"""Issue 8, item 6: what every answer tells the browser, and pages a strict
Content-Security-Policy can show (no inline script, event handler or style anywhere)."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from tests.helpers import client_for

pytestmark = [pytest.mark.django_db]

REPO = Path(__file__).resolve().parent.parent


def _csp(response) -> dict[str, list[str]]:
    policy = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}


@pytest.mark.parametrize("who", ["anonymous", "root"])
def test_every_answer_has_a_strict_csp_and_a_permissions_policy(people, who):
    client = Client() if who == "anonymous" else client_for(people.root)
    for url in (reverse("login"), reverse("domain_list"), reverse("healthz"), "/nowhere/"):
        response = client.get(url)
        csp = _csp(response)
        assert csp["default-src"] == ["'self'"], url
        assert csp["script-src"] == ["'self'"], url
        assert csp["style-src"] == ["'self'"], url
        assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"]
        assert "'unsafe-inline'" not in response["Content-Security-Policy"]
        assert "'unsafe-eval'" not in response["Content-Security-Policy"]
        policy = response["Permissions-Policy"]
        for feature in ("camera=()", "microphone=()", "geolocation=()", "usb=()"):
            assert feature in policy, (url, feature)


class InlineFinder(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' would block: inline scripts, event
    handler attributes, javascript: links, style elements and attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        names = dict(attrs)
        if tag == "script":
            # A JSON data block (json_script) is never run: CSP does not block it.
            data = (names.get("type") or "").lower() == "application/json"
            self._in_script = "src" not in names and not data
        if tag == "style":
            self.found.append("<style>")
        for name, value in attrs:
            if name.startswith("on") or name == "style" or name.startswith("hx-on"):
                self.found.append(f"<{tag} {name}=…>")
            if name in ("href", "src", "action") and (value or "").strip().lower().startswith(
                "javascript:"
            ):
                self.found.append(f"<{tag} {name}=javascript:…>")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.found.append(f"<script>{data.strip()[:40]}…")


def _inline(html: str) -> list[str]:
    finder = InlineFinder()
    finder.feed(html)
    return finder.found


@pytest.mark.parametrize(
    "path", sorted(str(p.relative_to(REPO)) for p in (REPO / "templates").rglob("*.html"))
)
def test_no_template_has_inline_script_or_style(path):
    assert _inline((REPO / path).read_text()) == []


def test_the_inline_finder_finds_what_it_looks_for():
    page = (
        '<script>alert(1)</script><a onclick="x()">a</a><p style="color:red">p</p>'
        '<style>p{}</style><a href="javascript:x()">j</a><script src="/ok.js"></script>'
        '<script type="application/json" id="d">{"t": [1]}</script>'
    )
    assert len(_inline(page)) == 5


def test_rendered_pages_have_no_inline_script_or_style(people, hosts, make_domain):
    domain = make_domain(state="running")
    root = client_for(people.root)
    pages = [
        Client().get(reverse("login")),
        root.get(reverse("domain_list")),
        root.get(reverse("domain_list"), headers={"HX-Request": "true"}),
        root.get(reverse("domain_detail", args=[domain.host.name, domain.uuid])),
        root.get(reverse("domain_migrate", args=[domain.host.name, domain.uuid])),
        root.get(reverse("domain_xml_edit", args=[domain.host.name, domain.uuid])),
        root.get(reverse("activity")),
        root.get(reverse("host_detail", args=["alpha"])),
        root.get(reverse("template_new")),
        root.get(reverse("team_detail", args=["team-a"])),
        root.get("/nowhere/"),
    ]
    for response in pages:
        assert _inline(response.content.decode()) == [], response.request["PATH_INFO"]


def test_base_tells_htmx_to_inject_no_style_and_eval_nothing(people):
    page = client_for(people.root).get(reverse("domain_list")).content.decode()
    assert '"includeIndicatorStyles": false' in page and '"allowEval": false' in page
