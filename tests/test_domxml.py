"""domxml: builders escape what they are given; the parser refuses entities and DTDs."""

from __future__ import annotations

import uuid

import pytest

from domains import domxml
from domains.domxml import SimpleDomain, XMLError, build_simple_domain, build_snapshot

NASTY_NAME = "a<b>&c\"d'e]]>"


def test_build_simple_domain_escapes_the_name():
    xml = build_simple_domain(SimpleDomain(name=NASTY_NAME, uuid=str(uuid.uuid4())))

    assert "<b>" not in xml
    assert "&lt;b&gt;&amp;c" in xml
    # It reads back as exactly the name that went in.
    assert domxml.domain_name(xml) == NASTY_NAME


def test_build_simple_domain_has_the_facts_libvirt_needs():
    the_uuid = str(uuid.uuid4())
    root = domxml.parse(
        build_simple_domain(
            SimpleDomain(name="web", uuid=the_uuid, memory_mib=256, vcpus=1, max_vcpus=2)
        )
    )

    assert root.get("type") == "test"
    assert root.findtext("uuid") == the_uuid
    assert root.find("memory").text == str(256 * 1024)
    assert root.find("memory").get("unit") == "KiB"
    assert root.find("vcpu").text == "2"
    assert root.find("vcpu").get("current") == "1"
    assert root.find("devices/memballoon") is not None


def test_build_snapshot_escapes_name_and_description():
    xml = build_snapshot("s<1>", description='"quoted" & <tagged>')
    root = domxml.parse(xml)

    assert root.findtext("name") == "s<1>"
    assert root.findtext("description") == '"quoted" & <tagged>'


def test_external_entity_is_not_expanded():
    xxe = (
        '<?xml version="1.0"?>\n'
        '<!DOCTYPE domain [<!ENTITY e SYSTEM "file:///etc/passwd">]>\n'
        "<domain><name>&e;</name></domain>"
    )
    root = domxml.parse(xxe)

    text = domxml.to_string(root)
    assert "root:" not in text
    assert not root.findtext("name")
    # With no expanded name, the XML names no domain.
    with pytest.raises(XMLError):
        domxml.domain_name(xxe)


def test_internal_entities_are_not_expanded():
    laughs = (
        '<!DOCTYPE domain [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        "<domain><name>&b;</name></domain>"
    )
    root = domxml.parse(laughs)

    assert "lol" not in (root.findtext("name") or "")


def test_external_dtd_is_not_loaded():
    # Loading /etc/passwd as a DTD would fail to parse; not loading it parses fine.
    root = domxml.parse(
        '<!DOCTYPE domain SYSTEM "file:///etc/passwd"><domain><name>ok</name></domain>'
    )

    assert root.findtext("name") == "ok"


@pytest.mark.parametrize(
    "text",
    ["", "<domain>", "<domain><name>x</domain>", "not xml at all", "<a></b>"],
)
def test_malformed_xml_raises_xmlerror(text):
    with pytest.raises(XMLError, match="Malformed XML"):
        domxml.parse(text)


def test_xmlerror_is_a_valueerror():
    # Forms catch ValueError to show the message next to the field.
    assert issubclass(XMLError, ValueError)


def test_domain_name_requires_a_name():
    with pytest.raises(XMLError, match="names no domain"):
        domxml.domain_name("<domain type='test'><uuid>x</uuid></domain>")
