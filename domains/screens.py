"""The guest's screen as a small PNG for the detail page (libvirt's screenshot API).

QEMU answers in PPM, which no browser shows; the test driver in PNG. Either way the page
gets a PNG no wider than THUMBNAIL_WIDTH, made with Pillow, and kept a few seconds per
process so that everyone on the page shares one libvirt call.
"""

from __future__ import annotations

import io
import threading
import time

from django.conf import settings
from PIL import Image

from . import hypervisor

THUMBNAIL_WIDTH = 480
_kept: dict[tuple[str, str], tuple[float, bytes]] = {}
_lock = threading.Lock()


def thumbnail(uri: str, uuid: str) -> bytes:
    """A PNG of the domain's screen, at most THUMBNAIL_WIDTH wide; HypervisorError when
    libvirt cannot take one (not running, no graphics, the host away)."""
    key = (uri, uuid)
    now = time.monotonic()
    with _lock:
        hit = _kept.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
    _mime, data = hypervisor.screenshot(uri, uuid)
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        if image.width > THUMBNAIL_WIDTH:
            height = max(1, round(image.height * THUMBNAIL_WIDTH / image.width))
            image = image.resize((THUMBNAIL_WIDTH, height))
        out = io.BytesIO()
        image.save(out, format="PNG", optimize=False)
    png = out.getvalue()
    with _lock:
        if len(_kept) > 200:
            _kept.clear()
        _kept[key] = (now + settings.VMPANEL_SCREENSHOT_CACHE_SECONDS, png)
    return png
