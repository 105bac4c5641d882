"""Domain XML: the hardened parser, builders and readers. The only module using lxml.

XML is always built as a tree and serialised; never assembled with string formatting,
so names with `<`, `&` or quotes come out escaped.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

# No entities, no network, no huge trees: the XML may come from a user.
_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, huge_tree=False, remove_blank_text=True
)


class XMLError(ValueError):
    """The XML is not well-formed or not a domain."""


def parse(text: str) -> etree._Element:
    try:
        root = etree.fromstring(text.encode(), parser=_PARSER)
    except etree.XMLSyntaxError as exc:
        raise XMLError(f"Malformed XML: {exc}") from None
    return root


def to_string(root: etree._Element) -> str:
    return etree.tostring(root, pretty_print=True, encoding="unicode")


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str):
    el = etree.SubElement(parent, tag, {k: str(v) for k, v in attrs.items()})
    if text is not None:
        el.text = str(text)
    return el


@dataclass(frozen=True)
class SimpleDomain:
    """What a minimal domain needs: enough for the test driver and the demo."""

    name: str
    uuid: str
    memory_mib: int = 512
    current_memory_mib: int | None = None
    vcpus: int = 1
    max_vcpus: int | None = None
    domain_type: str = "test"
    arch: str = "i686"
    balloon: bool = True


def build_simple_domain(spec: SimpleDomain) -> str:
    root = etree.Element("domain", type=spec.domain_type)
    _sub(root, "name", spec.name)
    _sub(root, "uuid", spec.uuid)
    _sub(root, "memory", spec.memory_mib * 1024, unit="KiB")
    current = spec.current_memory_mib or spec.memory_mib
    _sub(root, "currentMemory", current * 1024, unit="KiB")
    maximum = spec.max_vcpus or spec.vcpus
    vcpu = _sub(root, "vcpu", maximum, placement="static")
    if spec.vcpus != maximum:
        vcpu.set("current", str(spec.vcpus))
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm", arch=spec.arch)
    devices = _sub(root, "devices")
    if spec.balloon:
        _sub(devices, "memballoon", model="virtio")
    return to_string(root)


def build_snapshot(name: str, description: str = "") -> str:
    root = etree.Element("domainsnapshot")
    _sub(root, "name", name)
    if description:
        _sub(root, "description", description)
    return to_string(root)


def domain_name(xml: str) -> str:
    name = parse(xml).findtext("name")
    if not name:
        raise XMLError("The XML names no domain.")
    return name
