// vmpanel guest consoles: a graphical (VNC, drawn by noVNC) or serial (drawn by xterm.js)
// console inside `#console`, talking to the panel's WebSocket proxy with one-time tickets.
//
// Loaded as <script type="module">; xterm.js and its fit addon are classic scripts loaded
// before it (window.Terminal, window.FitAddon), noVNC is imported below as ES modules.
//
// Contract with the server-rendered page:
//   <div id="console" data-kind="vnc|serial" data-ticket-url="/domains/<host>/<uuid>/console/ticket/"
//        data-view-only="true|false" data-csrf="<token>">
//     <p data-console-status>…</p>                              status line (text set here)
//     <button type="button" data-console-action="reconnect">    new ticket, new connection
//     vnc only: <button data-console-action="ctrl-alt-del">, <button data-console-action="fullscreen">,
//               <input type="checkbox" data-console-scale>       scale to fit (switched on here)
//               <form data-console-paste><textarea name="text"></textarea><button type="submit">
//     <div data-console-screen></div>                           the screen; needs a height (console.css)
//   </div>
//
// Contract with the server: POST (empty body, X-CSRFToken header) to data-ticket-url with
// ?kind=vnc|serial. 2xx answer: {"ticket", "url", "password", "expires_in", "view_only"}; `url`
// is ws:, wss:, http(s): or root-relative (made ws:/wss: on the page's host, matching the
// page's scheme). Any other answer: {"error": "<plain words>"}, shown on the status line.
// Tickets are one-time, so every connection, reconnects included, asks for a new one.
// The VNC socket carries RFB as binary frames (no sub-protocol asked for); the serial socket
// carries the console's raw bytes both ways as binary frames (text frames are shown too).
//
// The Content-Security-Policy allows no inline script or style and no eval: nothing here
// needs them; setting element.style from script is CSSOM, which the policy does not restrict.

import RFB from "../vendor/novnc/core/rfb.js";
// noVNC's own Unicode-to-keysym table: what it uses itself for typed characters.
import keysyms from "../vendor/novnc/core/input/keysymdef.js";

// The words people read, in the page's language: Django's JavaScript catalogue (/jsi18n/,
// loaded by the page before this module); as written here if it did not load.
const gettext = window.gettext || ((text) => text);
const interpolate =
  window.interpolate || ((text, values) => text.replace(/%\((\w+)\)s/g, (_m, key) => String(values[key])));

// X11 keysyms (X11/keysymdef.h) the paste sends for keys that have no printable character.
const XK_RETURN = 0xff0d;
const XK_TAB = 0xff09;

function start() {
  // Every page may load this file; only a console page has #console, and elsewhere nothing
  // happens (no ticket is asked for, no listener is added).
  const root = document.getElementById("console");
  if (!root) return;
  const ui = {
    root,
    status: root.querySelector("[data-console-status]"),
    screen: root.querySelector("[data-console-screen]"),
    reconnect: root.querySelector('[data-console-action="reconnect"]'),
  };
  if (ui.status && !ui.status.hasAttribute("role")) ui.status.setAttribute("role", "status");
  const kind = root.dataset.kind;
  let session;
  try {
    if (!ui.screen) throw new Error(gettext("the page has no screen area"));
    if (kind === "vnc") session = new VncSession(ui);
    else if (kind === "serial") session = new SerialSession(ui);
    else throw new Error(interpolate(gettext("unknown console kind %(kind)s"), { kind }, true));
  } catch (err) {
    setStatus(ui, "disconnected", interpolate(gettext("Disconnected: %(reason)s"), { reason: message(err) }, true));
    return;
  }
  if (ui.reconnect) ui.reconnect.addEventListener("click", () => session.connect());
  session.connect();
}

// ---- status line, tickets and addresses ---------------------------------------------------

// data-state (connecting|connected|disconnected) is for console.css; the words are for people.
function setStatus(ui, state, text) {
  if (!ui.status) return;
  ui.status.textContent = text;
  ui.status.dataset.state = state;
}

function message(err) {
  return (err && err.message) || String(err);
}

// An error whose message is fit to show on the status line as it is.
class ConsoleError extends Error {}

async function requestTicket(root, kind) {
  const url = new URL(root.dataset.ticketUrl || "", window.location.href);
  url.searchParams.set("kind", kind);
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
      headers: { "X-CSRFToken": root.dataset.csrf || "", "Accept": "application/json" },
    });
  } catch (err) {
    throw new ConsoleError(gettext("the panel cannot be reached"));
  }
  let answer = null;
  try {
    answer = await response.json();
  } catch (err) {
    // Not JSON (a proxy's error page, say): the status code below is all there is to say.
  }
  if (!response.ok) {
    const words = answer && typeof answer.error === "string" && answer.error.trim();
    throw new ConsoleError(
      words || interpolate(gettext("the panel answered %(status)s"), { status: response.status }, true),
    );
  }
  if (!answer || typeof answer.url !== "string" || !answer.url) {
    throw new ConsoleError(gettext("the panel's answer had no console address"));
  }
  return answer;
}

// The server may answer a root-relative path: WebSockets need an absolute ws:/wss: URL, on
// the page's host and with wss: on an https page (browsers refuse ws: there).
function webSocketUrl(raw) {
  const url = new URL(raw, window.location.href);
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  else if (url.protocol !== "ws:" && url.protocol !== "wss:") {
    throw new ConsoleError(gettext("the console address is not a WebSocket address"));
  }
  return url.href;
}

// ---- what both kinds share: one connection at a time, each on a new ticket -----------------

class Session {
  constructor(ui, kind) {
    this.ui = ui;
    this.kind = kind;
    // Each connect() bumps the generation; callbacks of a superseded connection (its late
    // ticket answer, its close event) see a different number and do nothing.
    this.generation = 0;
    this.pageViewOnly = ui.root.dataset.viewOnly === "true";
    this.viewOnly = this.pageViewOnly;
    this.connected = false;
  }

  async connect() {
    const generation = ++this.generation;
    this.closeConnection();
    this.setConnected(false);
    this.setBusy(true);
    setStatus(this.ui, "connecting", gettext("Connecting…"));
    let ticket;
    try {
      ticket = await requestTicket(this.ui.root, this.kind);
    } catch (err) {
      this.disconnected(generation, message(err));
      return;
    }
    if (generation !== this.generation) return;
    // The ticket is spent; if the console then never answers, Reconnect must still work.
    this.setBusy(false);
    // The ticket is used at once, well within its expires_in.
    // Either side saying view-only wins: the page knows it before the answer comes, and the
    // answer is what the proxy enforces.
    this.viewOnly = this.pageViewOnly || ticket.view_only === true;
    try {
      this.openConnection(generation, webSocketUrl(ticket.url), ticket);
    } catch (err) {
      this.disconnected(generation, message(err));
    }
  }

  // For the subclasses' event handlers.
  isCurrent(generation) {
    return generation === this.generation;
  }

  established(generation) {
    if (!this.isCurrent(generation)) return;
    this.setBusy(false);
    this.setConnected(true);
    setStatus(this.ui, "connected", gettext("Connected"));
  }

  disconnected(generation, reason) {
    if (!this.isCurrent(generation)) return;
    this.setBusy(false);
    this.setConnected(false);
    setStatus(this.ui, "disconnected", interpolate(gettext("Disconnected: %(reason)s"), { reason }, true));
  }

  // The reconnect button is off while a ticket is being asked for, so one click is one ticket.
  setBusy(busy) {
    if (this.ui.reconnect) this.ui.reconnect.disabled = busy;
  }

  setConnected(connected) {
    this.connected = connected;
  }
}

// ---- VNC -----------------------------------------------------------------------------------

class VncSession extends Session {
  constructor(ui) {
    super(ui, "vnc");
    const root = ui.root;
    this.rfb = null;
    this.ctrlAltDel = root.querySelector('[data-console-action="ctrl-alt-del"]');
    this.fullscreen = root.querySelector('[data-console-action="fullscreen"]');
    this.scale = root.querySelector("[data-console-scale]");
    this.paste = root.querySelector("[data-console-paste]");

    // Scaling to fit is the default: a guest screen is seldom the size of the page.
    if (this.scale) {
      this.scale.checked = true;
      this.scale.addEventListener("change", () => {
        if (this.rfb) this.rfb.scaleViewport = this.scale.checked;
      });
    }
    if (this.ctrlAltDel) {
      this.ctrlAltDel.addEventListener("click", () => {
        if (this.rfb && this.connected && !this.viewOnly) {
          this.rfb.sendCtrlAltDel();
          this.rfb.focus();
        }
      });
    }
    if (this.fullscreen) {
      if (!document.fullscreenEnabled) {
        this.fullscreen.disabled = true;
      } else {
        this.fullscreen.addEventListener("click", () => {
          // The whole #console goes full screen, toolbar and status line with it.
          const request = document.fullscreenElement ? document.exitFullscreen() : root.requestFullscreen();
          request.catch(() => {}); // refused (not from a click, or by policy): nothing to undo
        });
        document.addEventListener("fullscreenchange", () => {
          this.fullscreen.setAttribute("aria-pressed", String(document.fullscreenElement === root));
        });
      }
    }
    if (this.paste) {
      this.paste.addEventListener("submit", (event) => {
        event.preventDefault(); // never posted: the text goes to the guest, not to the server
        this.typeText(this.paste.elements.text ? this.paste.elements.text.value : "");
      });
    }
    this.updateControls();
  }

  openConnection(generation, url, ticket) {
    // A server wanting a password gets one only if the ticket carries one; without it noVNC
    // asks (credentialsrequired below) and the status line says so.
    const password = typeof ticket.password === "string" ? ticket.password : "";
    const rfb = new RFB(this.ui.screen, url, {
      credentials: password ? { password } : {},
      shared: true, // other viewers and the admin's own client stay connected
    });
    this.rfb = rfb;
    rfb.viewOnly = this.viewOnly; // noVNC then sends no key or pointer events
    rfb.focusOnClick = !this.viewOnly;
    rfb.scaleViewport = this.scale ? this.scale.checked : true;
    rfb.resizeSession = false; // never ask the guest to change its resolution
    rfb.background = "#000";

    // The disconnect event only says clean or not; the reason, if the server gave one, comes
    // in an earlier event of the same connection.
    let reason = "";
    let wasConnected = false;
    rfb.addEventListener("connect", () => {
      wasConnected = true;
      this.established(generation);
      if (!this.viewOnly) rfb.focus();
    });
    rfb.addEventListener("securityfailure", (event) => {
      const detail = event.detail || {};
      reason = detail.reason
        ? interpolate(gettext("authentication failed (%(reason)s)"), { reason: detail.reason }, true)
        : interpolate(gettext("authentication failed (status %(status)s)"), { status: detail.status }, true);
    });
    rfb.addEventListener("credentialsrequired", () => {
      reason = gettext("the console asked for a password the panel did not give");
      rfb.disconnect();
    });
    rfb.addEventListener("serververification", () => {
      // Only RSA-AES servers ask this, and the panel has no key to check against.
      reason = gettext("the console asked to verify its identity, which the panel does not support");
      rfb.disconnect();
    });
    rfb.addEventListener("disconnect", (event) => {
      const clean = Boolean(event.detail && event.detail.clean);
      if (this.rfb === rfb) this.rfb = null;
      this.disconnected(generation, reason || (clean
        ? gettext("the console was closed")
        : wasConnected ? gettext("the connection was lost") : gettext("could not connect to the console")));
    });
  }

  closeConnection() {
    const rfb = this.rfb;
    this.rfb = null;
    if (rfb) {
      try {
        rfb.disconnect(); // its disconnect event belongs to an old generation: ignored
      } catch (err) {
        // Already disconnected: nothing to close.
      }
    }
  }

  setConnected(connected) {
    super.setConnected(connected);
    this.updateControls();
  }

  // Keys go only to a connected console the user may type on.
  updateControls() {
    const canType = this.connected && !this.viewOnly;
    const why = this.viewOnly ? gettext("View only: you may watch this console but not type on it.") : "";
    if (this.ctrlAltDel) {
      this.ctrlAltDel.disabled = !canType;
      this.ctrlAltDel.title = why;
    }
    if (this.paste) {
      for (const control of this.paste.elements) control.disabled = !canType;
      this.paste.title = why;
    }
  }

  // Types text as key presses (press and release each), for guests with no clipboard agent.
  // Printable characters use noVNC's table: Latin-1 keysyms equal the code point (0x20-0xff),
  // some others have legacy keysyms, the rest are 0x01000000 + code point; newline and tab
  // are the Return and Tab keys; other control characters have no key and are skipped.
  typeText(text) {
    const rfb = this.rfb;
    if (!rfb || !this.connected || this.viewOnly) return;
    for (const character of text) { // by code point, so astral characters stay whole
      const code = character.codePointAt(0);
      let keysym;
      if (character === "\n" || character === "\r") keysym = XK_RETURN;
      else if (character === "\t") keysym = XK_TAB;
      else if (code < 0x20 || code === 0x7f) continue;
      else keysym = keysyms.lookup(code);
      rfb.sendKey(keysym, null);
    }
    rfb.focus();
  }
}

// ---- serial --------------------------------------------------------------------------------

class SerialSession extends Session {
  constructor(ui) {
    super(ui, "serial");
    this.socket = null;
    const Terminal = window.Terminal;
    const FitAddon = window.FitAddon && (window.FitAddon.FitAddon || window.FitAddon);
    if (typeof Terminal !== "function") throw new Error(gettext("the terminal (xterm.js) did not load"));

    this.encoder = new TextEncoder();
    this.colours = new TrueColourFilter();
    this.term = withCspSafeStyleElements(() => {
      const term = new Terminal({
        cursorBlink: true,
        disableStdin: this.viewOnly,
        fontFamily: 'ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", monospace',
        fontSize: 14,
        scrollback: 5000,
        theme: { background: "#000000", foreground: "#e6edf3" },
      });
      if (typeof FitAddon === "function") {
        this.fitAddon = new FitAddon();
        term.loadAddon(this.fitAddon);
      }
      term.open(ui.screen);
      return term;
    });

    // Keys typed in the terminal go to the guest as UTF-8 bytes. onBinary carries the few
    // mouse reports that are raw bytes rather than text.
    this.term.onData((data) => this.send(this.encoder.encode(data)));
    this.term.onBinary((data) => this.send(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));

    // The terminal fills its container: refit when the window (or, where supported, the
    // container alone, as when going full screen) changes size, once per frame at most.
    this.fit();
    let queued = false;
    const refit = () => {
      if (queued) return;
      queued = true;
      window.requestAnimationFrame(() => {
        queued = false;
        this.fit();
      });
    };
    window.addEventListener("resize", refit);
    if (typeof ResizeObserver === "function") new ResizeObserver(refit).observe(ui.screen);
  }

  fit() {
    if (!this.fitAddon) return;
    try {
      this.fitAddon.fit();
    } catch (err) {
      // Not laid out yet (hidden): the next resize fits it.
    }
  }

  send(bytes) {
    if (this.viewOnly || !this.socket || this.socket.readyState !== WebSocket.OPEN) return;
    this.socket.send(bytes);
  }

  openConnection(generation, url) {
    this.term.options.disableStdin = this.viewOnly;
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    // One decoder per connection, streaming: a UTF-8 character split across two messages is
    // decoded whole; invalid bytes show as U+FFFD rather than stopping the console.
    const decoder = new TextDecoder("utf-8");
    this.colours.reset();
    let opened = false;
    socket.addEventListener("open", () => {
      opened = true;
      this.established(generation);
      if (!this.viewOnly) this.term.focus();
    });
    socket.addEventListener("message", (event) => {
      if (!this.isCurrent(generation)) return;
      const text = typeof event.data === "string"
        ? event.data
        : decoder.decode(new Uint8Array(event.data), { stream: true });
      if (text) this.term.write(this.colours.filter(text));
    });
    socket.addEventListener("close", (event) => {
      if (this.socket === socket) this.socket = null;
      let reason = event.reason;
      if (!reason) {
        if (!opened) reason = gettext("could not connect to the console");
        else if (event.code === 1000 || event.code === 1001) reason = gettext("the console was closed");
        else reason = gettext("the connection was lost");
      }
      this.disconnected(generation, reason);
    });
    // An error event is always followed by a close event, which reports it.
  }

  closeConnection() {
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close(1000);
  }
}

// ---- xterm.js under style-src 'self' --------------------------------------------------------

// xterm.js 6 draws with DOM elements and puts the rules it computes (theme colours, row
// metrics, scrollbar colours) in <style> elements it creates and fills with textContent.
// The CSP refuses those as inline styles (even empty ones): the terminal would draw wrongly
// and every refusal be logged. So while the terminal is made and opened, which is when it
// creates them, document.createElement("style") hands out an inert <template> instead whose
// text goes into a constructed stylesheet adopted by the document (CSSOM, which the CSP
// allows). Other elements, and style elements made by anyone at any other time, are untouched.
function withCspSafeStyleElements(create) {
  if (!("adoptedStyleSheets" in document) || typeof CSSStyleSheet.prototype.replaceSync !== "function") {
    return create();
  }
  const nativeCreateElement = document.createElement;
  document.createElement = function (tagName, options) {
    if (String(tagName).toLowerCase() !== "style") return nativeCreateElement.call(this, tagName, options);
    return styleStandIn(nativeCreateElement.call(this, "template"));
  };
  try {
    return create();
  } finally {
    delete document.createElement; // back to Document.prototype.createElement
  }
}

function styleStandIn(element) {
  const sheet = new CSSStyleSheet();
  document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
  let text = "";
  const property = {
    configurable: true,
    get: () => text,
    set: (value) => {
      text = value == null ? "" : String(value);
      sheet.replaceSync(text);
    },
  };
  Object.defineProperty(element, "textContent", property);
  Object.defineProperty(element, "innerText", property);
  // When xterm removes the element (terminal disposed), its rules go with it.
  element.remove = function () {
    document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => s !== sheet);
    Element.prototype.remove.call(this);
  };
  return element;
}

// xterm.js paints 24-bit colours (SGR 38;2;r;g;b and 48;2;r;g;b) through a style=""
// attribute on each span, which the CSP refuses: the text would lose its colour and every
// cell log a violation. This rewrites those selections to the nearest of the 256 indexed
// colours (38;5;n), which xterm paints with classes. Sequences split across two messages
// are held back until the rest arrives.
class TrueColourFilter {
  constructor() {
    this.pending = "";
  }

  reset() {
    this.pending = "";
  }

  filter(chunk) {
    let text = this.pending + chunk;
    this.pending = "";
    const escape = text.lastIndexOf("\x1b");
    if (escape === -1) return text;
    const tail = text.slice(escape);
    if (tail.length < 64 && /^\x1b(\[[0-9;:]*)?$/.test(tail)) {
      this.pending = tail; // an unfinished CSI sequence: wait for its end
      text = text.slice(0, escape);
    }
    return text.replace(/\x1b\[([0-9;:]*)m/g, (whole, params) =>
      params.includes("2") ? `\x1b[${rewriteSgr(params)}m` : whole);
  }
}

function rewriteSgr(params) {
  const fields = params.split(";");
  const out = [];
  for (let i = 0; i < fields.length; i++) {
    const field = fields[i];
    if (field.includes(":")) {
      // ITU T.416 form: 38:2:<colour space>:r:g:b, also seen without the colour space.
      const sub = field.split(":");
      if ((sub[0] === "38" || sub[0] === "48") && sub[1] === "2") {
        const rgb = sub.length >= 6 ? sub.slice(3, 6) : sub.slice(2, 5);
        out.push(sub[0], "5", String(nearestIndexedColour(rgb)));
      } else {
        out.push(field);
      }
      continue;
    }
    if ((field === "38" || field === "48" || field === "58") && i + 1 < fields.length) {
      if (fields[i + 1] === "5") { // already indexed: copy it, so its number is not read as a code
        out.push(...fields.slice(i, i + 3));
        i += 2;
        continue;
      }
      if (fields[i + 1] === "2") {
        const rgb = fields.slice(i + 2, i + 5);
        // 58 (underline colour) is painted through CSSOM and can stay 24-bit.
        if (field === "58") out.push(...fields.slice(i, i + 5));
        else out.push(field, "5", String(nearestIndexedColour(rgb)));
        i += 4;
        continue;
      }
    }
    out.push(field);
  }
  return out.join(";");
}

// The xterm 256-colour palette: a 6x6x6 cube from 16 and a grey ramp from 232.
const CUBE_LEVELS = [0, 95, 135, 175, 215, 255];

function nearestIndexedColour(rgb) {
  const [r, g, b] = [0, 1, 2].map((i) => Math.min(255, Math.max(0, Number(rgb[i]) || 0)));
  const level = (v) => {
    let best = 0;
    for (let i = 1; i < CUBE_LEVELS.length; i++) {
      if (Math.abs(CUBE_LEVELS[i] - v) < Math.abs(CUBE_LEVELS[best] - v)) best = i;
    }
    return best;
  };
  const [ri, gi, bi] = [level(r), level(g), level(b)];
  const cube = [CUBE_LEVELS[ri], CUBE_LEVELS[gi], CUBE_LEVELS[bi]];
  const greyIndex = Math.min(23, Math.max(0, Math.round(((r + g + b) / 3 - 8) / 10)));
  const greyValue = 8 + 10 * greyIndex;
  const distance = (c) => (c[0] - r) ** 2 + (c[1] - g) ** 2 + (c[2] - b) ** 2;
  return distance([greyValue, greyValue, greyValue]) < distance(cube)
    ? 232 + greyIndex
    : 16 + 36 * ri + 6 * gi + bi;
}

// ---- start ---------------------------------------------------------------------------------

// Last in the file: the classes above exist only once their declarations have run. A module
// script runs once the document is parsed, just before DOMContentLoaded (readyState is then
// already "interactive"), so wait for the event only while the document is still loading.
if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", start);
} else {
  start();
}
