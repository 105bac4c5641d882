"""The guest's screen thumbnail (libvirt's screenshot API; the test driver answers it)."""

from __future__ import annotations

import io

import pytest
from django.urls import reverse
from PIL import Image

from domains import screens
from tests.helpers import client_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def test_a_running_domain_shows_its_screen_as_a_small_png(people, make_domain):
    domain = make_domain(state="running")
    url = reverse("domain_screenshot", args=[domain.host.name, domain.uuid])
    response = client_for(people.victor_viewer).get(url)  # viewers see the screen too
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert "no-store" in response["Cache-Control"]
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG" and 0 < image.width <= screens.THUMBNAIL_WIDTH
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 1  # a picture, not a blank
    page = client_for(people.victor_viewer).get(
        reverse("domain_detail", args=[domain.host.name, domain.uuid])
    )
    assert url in page.content.decode()


def test_no_screen_for_a_shut_off_domain_nor_for_another_team(people, make_domain):
    off = make_domain(state="shutoff")
    url = reverse("domain_screenshot", args=[off.host.name, off.uuid])
    response = client_for(people.olga_operator).get(url)
    assert response.status_code == 404 and b"Not running" in response.content
    theirs = make_domain(state="running", team="b")
    url = reverse("domain_screenshot", args=[theirs.host.name, theirs.uuid])
    assert client_for(people.olga_operator).get(url).status_code == 404
