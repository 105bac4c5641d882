"""The view-only filter of the VNC proxy: input messages dropped, the rest byte for byte."""

from __future__ import annotations

import pytest

from domains.rfb import InputFilter, ProtocolError

HANDSHAKE = b"RFB 003.008\n" + b"\x02" + b"A" * 16 + b"\x01"
PIXEL_FORMAT = b"\x00" + b"\x00" * 19
ENCODINGS = b"\x02\x00\x00\x02" + b"\x00\x00\x00\x00" + b"\xff\xff\xff\x21"
UPDATE = b"\x03\x01\x00\x00\x00\x00\x04\x00\x03\x00"
KEY = b"\x04\x01\x00\x00\x00\x00\x00\x61"
POINTER = b"\x05\x01\x00\x10\x00\x20"
CUT = b"\x06\x00\x00\x00\x00\x00\x00\x05hello"


def test_a_view_only_console_drops_keys_pointer_and_clipboard():
    stream = HANDSHAKE + PIXEL_FORMAT + KEY + ENCODINGS + POINTER + UPDATE + CUT + UPDATE
    passed = InputFilter(view_only=True).feed(stream)
    assert passed == HANDSHAKE + PIXEL_FORMAT + ENCODINGS + UPDATE + UPDATE


def test_messages_split_across_frames_are_judged_whole():
    stream = HANDSHAKE + KEY + UPDATE + POINTER + CUT + ENCODINGS
    f = InputFilter(view_only=True)
    passed = b"".join(f.feed(stream[i : i + 3]) for i in range(0, len(stream), 3))
    assert passed == HANDSHAKE + UPDATE + ENCODINGS
    assert f.buffer == b""


def test_without_vnc_auth_the_handshake_has_no_response_part():
    handshake = b"RFB 003.008\n" + b"\x01" + b"\x01"
    assert InputFilter(view_only=True).feed(handshake + KEY + UPDATE) == handshake + UPDATE


def test_operators_pass_everything_and_garbage_is_refused():
    assert InputFilter(view_only=False).feed(HANDSHAKE + KEY) == HANDSHAKE + KEY
    with pytest.raises(ProtocolError):
        InputFilter(view_only=True).feed(HANDSHAKE + b"\x63junk")
