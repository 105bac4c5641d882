"""A viewer's VNC console is view-only on the server, not just in the page.

noVNC's viewOnly flag only stops the page from sending input; anyone can send RFB
messages by hand. `InputFilter` reads the client-to-server half of the RFB protocol
(RFC 6143) as the proxy passes it on and drops the key, pointer and clipboard messages of a
view-only console, keeping everything else (the handshake, pixel formats, encodings,
update requests) byte for byte.
"""

from __future__ import annotations

# Client-to-server message types and their fixed lengths (RFC 6143 §7.5); SetEncodings and
# ClientCutText carry a count or a length after the fixed part.
SET_PIXEL_FORMAT, SET_ENCODINGS, UPDATE_REQUEST = 0, 2, 3
KEY_EVENT, POINTER_EVENT, CUT_TEXT = 4, 5, 6
_FIXED = {SET_PIXEL_FORMAT: 20, UPDATE_REQUEST: 10, KEY_EVENT: 8, POINTER_EVENT: 6}
_INPUT = {KEY_EVENT, POINTER_EVENT, CUT_TEXT}
VNC_AUTH = 2


class ProtocolError(ValueError):
    """The browser sent something that is not RFB: the connection is closed."""


class InputFilter:
    def __init__(self, view_only: bool):
        self.view_only = view_only
        self.buffer = b""
        self.phase = "version"  # version → security → (auth) → init → messages

    def feed(self, data: bytes) -> bytes:
        """What of `data` (and what was held back) may go on to the server now."""
        if not self.view_only:
            return data
        self.buffer += data
        out = []
        while True:
            size, keep, phase = self._next()
            if size is None or len(self.buffer) < size:
                break  # wait for the rest of the message
            chunk, self.buffer = self.buffer[:size], self.buffer[size:]
            self.phase = phase
            if keep:
                out.append(chunk)
        return b"".join(out)

    def _next(self) -> tuple[int | None, bool, str]:
        """(length of the next client message or None while too little has arrived to
        tell, whether it may pass, the phase after it)."""
        buf, phase = self.buffer, self.phase
        if phase == "version":
            return 12, True, "security"  # "RFB 003.008\n"
        if phase == "security":
            if not buf:
                return None, True, phase
            return 1, True, "auth" if buf[0] == VNC_AUTH else "init"
        if phase == "auth":
            return 16, True, "init"  # the DES response to the challenge
        if phase == "init":
            return 1, True, "messages"  # ClientInit: the shared flag
        if not buf:
            return None, True, phase
        kind = buf[0]
        if kind in _FIXED:
            return _FIXED[kind], kind not in _INPUT, phase
        if kind == SET_ENCODINGS:
            if len(buf) < 4:
                return None, True, phase
            return 4 + 4 * int.from_bytes(buf[2:4], "big"), True, phase
        if kind == CUT_TEXT:
            if len(buf) < 8:
                return None, False, phase
            return 8 + int.from_bytes(buf[4:8], "big"), False, phase
        raise ProtocolError(f"unknown RFB client message {kind}")
