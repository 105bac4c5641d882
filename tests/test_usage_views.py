"""Usage on the pages (issue 10): the detail page's Usage section and its graphs' data,
the list's CPU and memory columns, the host and team pages, and bad ranges."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from domains import collector
from domains.models import DomainUsage, DomainUsageSample
from tests.helpers import client_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _measure(host) -> None:
    ticker = collector.HostTicker(host, tick_seconds=10)
    ticker.tick()
    time.sleep(1.1)
    ticker.tick()


def _chart_data(html: str, key: str) -> dict:
    match = re.search(rf'<script id="{key}" type="application/json">(.*?)</script>', html, re.S)
    assert match, f"no data block {key}"
    return json.loads(match.group(1))


def test_the_detail_page_shows_usage_now_and_its_graphs(people, hosts, make_domain):
    domain = make_domain(state="running", devices=True)
    _measure(hosts.alpha)
    url = reverse("domain_detail", args=[domain.host.name, domain.uuid])
    html = client_for(people.victor_viewer).get(url).content.decode()  # viewers see it too
    assert "Usage" in html and "of its 1 vCPU" in html
    assert "(as the guest sees it)" in html
    assert "vda" in html and "/s" in html  # the disk's rates
    cpu = _chart_data(html, "usage-cpu")
    assert cpu["unit"] == "%" and [s["label"] for s in cpu["series"]] == ["average", "maximum"]
    assert len(cpu["t"]) == len(cpu["series"][0]["values"]) > 300  # an hour of 10 s steps
    assert any(v is not None for v in _chart_data(html, "usage-disk")["series"][0]["values"])
    # Each vCPU with the physical CPU it runs on (the guide's vcpus(), read live).
    vcpus = html[html.index("<caption>vCPUs</caption>") :].split("</table>")[0]
    row = re.search(r"<tr><td>0</td>.*?</tr>", vcpus, re.S).group(0)
    assert re.search(r'<td class="num">\d+</td></tr>$', row), row
    # The section polls itself while the domain runs, and pauses in a hidden tab.
    assert 'hx-trigger="every 10s, usage-refresh"' in html and "data-pause-when-hidden" in html


def test_the_usage_section_alone_and_its_ranges(people, hosts, make_domain):
    domain = make_domain(state="running", devices=True)
    _measure(hosts.alpha)
    client = client_for(people.olga_operator)
    url = reverse("domain_usage", args=[domain.host.name, domain.uuid])
    for key, step in (("hour", 10), ("day", 60), ("week", 1800), ("month", 1800), ("year", 21600)):
        response = client.get(url, {"range": key})
        assert response.status_code == 200
        html = response.content.decode()
        assert html.lstrip().startswith("<section") and 'id="usage"' in html
        times = _chart_data(html, "usage-cpu")["t"]
        assert {b - a for a, b in zip(times, times[1:], strict=False)} == {step}, key
        assert f'aria-current="true">{key}<' in html


@pytest.mark.parametrize("where", ["detail", "usage", "host"])
def test_an_unknown_range_is_a_400_that_says_so(where, people, hosts, make_domain):
    domain = make_domain(state="running")
    url = {
        "detail": reverse("domain_detail", args=[domain.host.name, domain.uuid]),
        "usage": reverse("domain_usage", args=[domain.host.name, domain.uuid]),
        "host": reverse("host_detail", args=["alpha"]),
    }[where]
    response = client_for(people.root).get(url, {"range": "fortnight<script>"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "Unknown time range" in html and "hour, day, week, month, year" in html
    assert "<script>" not in html.split("Unknown time range")[1][:80]


def test_figures_that_stopped_coming_say_since_when(people, hosts, make_domain):
    domain = make_domain(state="running", devices=True)
    _measure(hosts.alpha)
    old = timezone.now() - timedelta(minutes=5)
    DomainUsage.objects.filter(domain=domain).update(at=old)
    # The two reads may fall in two 10-second buckets: one sample, moved to the old time.
    samples = DomainUsageSample.objects.filter(domain=domain)
    samples.exclude(pk=samples.order_by("-at").first().pk).delete()
    samples.update(at=int(old.timestamp()) // 10 * 10)
    html = (
        client_for(people.olga_operator)
        .get(reverse("domain_detail", args=[domain.host.name, domain.uuid]))
        .content.decode()
    )
    assert "No data since" in html
    assert "of its 1 vCPU" not in html  # no stale figure passed off as "now"


def test_the_list_shows_and_sorts_by_cpu_and_memory(people, hosts, make_domain):
    busy = make_domain(state="running", devices=True)
    calm = make_domain(state="running", devices=True)
    off = make_domain(state="shutoff")
    _measure(hosts.alpha)
    DomainUsage.objects.filter(domain=busy).update(cpu_pct=87.5, spark=[10.0, None, 87.5])
    DomainUsage.objects.filter(domain=calm).update(cpu_pct=2.0)
    client = client_for(people.olga_operator)
    html = client.get(reverse("domain_list"), {"sort": "-cpu"}).content.decode()
    order = [html.index(d.name) for d in (busy, calm, off)]
    assert order == sorted(order)  # busiest first, the shut-off one last
    assert "87.5 %" in html and 'class="sparkline"' in html
    html = client.get(reverse("domain_list"), {"sort": "cpu"}).content.decode()
    assert html.index(calm.name) < html.index(busy.name) < html.index(off.name)


def test_host_and_team_pages_show_their_top_consumers(people, hosts, make_domain):
    domain = make_domain(state="running", devices=True)
    _measure(hosts.alpha)
    DomainUsage.objects.filter(domain=domain).update(cpu_pct=55.0)
    host_page = client_for(people.root).get(reverse("host_detail", args=["alpha"])).content
    html = host_page.decode()
    assert "Most CPU" in html and domain.name in html and "55.0 %" in html
    assert _chart_data(html, "host-usage-cpu")["unit"] == "%"
    team_page = client_for(people.olga_operator).get(reverse("team_detail", args=["team-a"]))
    html = team_page.content.decode()
    assert "Running vCPUs" in html and domain.name in html
