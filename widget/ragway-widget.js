/*! ragway chat widget. One tag: <script src="{api}/widget.js"
  data-widget="{widget id}" data-api="{api base}" data-stream-api="{optional}" async>
  Everything lives in a shadow root, so the host page's CSS cannot reach it;
  the only global is window.RagwayWidget {open, close, toggle}. */
(() => {
  "use strict";
  const me = document.currentScript || document.querySelector("script[data-widget]");
  if (!me) return;
  const widgetId = me.dataset.widget;
  const trim = (u) => (u || "").replace(/\/+$/, "");
  const api = trim(me.dataset.api || new URL(me.src).origin);
  const streamApi = trim(me.dataset.streamApi) || api;
  const store = "ragway-widget:" + widgetId;
  const mark = (n) => performance.mark && performance.mark("ragway-widget:" + n);
  mark("start");

  // A visitor's token and session survive page navigation within the tab.
  let s = {};
  try { s = JSON.parse(sessionStorage.getItem(store)) || {}; } catch (e) { /* private mode */ }
  const save = () => { try { sessionStorage.setItem(store, JSON.stringify(s)); } catch (e) { /* ignore */ } };
  let busy = false, renewTimer = 0, refused = "";

  const el = (tag, attrs, ...kids) => {
    const n = document.createElement(tag);
    for (const k in attrs || {}) {
      if (k.startsWith("on")) n.addEventListener(k.slice(2), attrs[k]);
      else n.setAttribute(k, attrs[k]);
    }
    for (const k of kids) if (k != null) n.append(k);
    return n;
  };

  const host = el("div", { "data-ragway-widget": widgetId, "data-state": "loading" });
  const root = host.attachShadow({ mode: "open" });
  root.append(el("style", {}, `
:host{all:initial}
*{box-sizing:border-box;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
.l{position:fixed;right:20px;bottom:20px;z-index:2147483000;width:56px;height:56px;border-radius:50%;border:0;cursor:pointer;background:var(--c);color:var(--t);box-shadow:0 4px 14px #0004;display:grid;place-items:center}
.l svg{width:26px;height:26px;fill:currentColor}
.p{position:fixed;right:20px;bottom:88px;z-index:2147483000;width:min(380px,calc(100vw - 40px));height:min(560px,calc(100vh - 120px));display:flex;flex-direction:column;background:#fff;color:#1d1d1f;border-radius:12px;box-shadow:0 8px 30px #0005;overflow:hidden}
.p[hidden]{display:none}
header{display:flex;align-items:center;gap:8px;padding:10px 12px;background:var(--c);color:var(--t)}
header h2{flex:1;margin:0;font-weight:600;font-size:15px}
header button{background:none;border:0;color:inherit;font-size:20px;cursor:pointer;line-height:1;padding:2px 6px}
.log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:10px}
.m{max-width:88%;padding:8px 11px;border-radius:10px;white-space:pre-wrap;word-wrap:break-word}
.u{align-self:flex-end;background:var(--c);color:var(--t)}
.a{align-self:flex-start;background:#f1f1f4}
.e{align-self:stretch;background:#fff4e5;color:#6b3d00;border:1px solid #f3d19c}
.a sup a{color:inherit;font-weight:600;text-decoration:none;padding:0 1px}
.a ol{margin:8px 0 0;padding:6px 0 0 20px;border-top:1px solid #ddd;font-size:12px;white-space:normal}
.a li{margin:3px 0}.a li b{display:block}.a li span{color:#555}
.a li:focus{outline:2px solid var(--c)}
.w::after{content:"\\2026";animation:b 1s infinite}@keyframes b{50%{opacity:.2}}
form{display:flex;gap:6px;padding:10px;border-top:1px solid #e4e4e8}
textarea{flex:1;resize:none;height:40px;padding:9px;border:1px solid #c8c8d0;border-radius:8px;color:#1d1d1f;background:#fff}
form button{border:0;border-radius:8px;padding:0 14px;background:var(--c);color:var(--t);cursor:pointer;font-weight:600}
form button:disabled{opacity:.5;cursor:default}
:focus-visible{outline:2px solid #1a73e8;outline-offset:2px}
`));

  const launcher = el("button", { class: "l", type: "button", "aria-label": "Open chat", "aria-expanded": "false", "aria-controls": "rw-panel" });
  launcher.innerHTML = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z"/></svg>';
  const title = el("h2", { id: "rw-title" }, "Chat");
  const close = el("button", { type: "button", "aria-label": "Close chat" }, "\u00d7");
  const log = el("div", { class: "log", role: "log", "aria-live": "polite", "aria-relevant": "additions text" });
  const input = el("textarea", { "aria-label": "Your question", placeholder: "Ask a question\u2026", rows: "1", maxlength: "4000" });
  const send = el("button", { type: "submit" }, "Send");
  const form = el("form", {}, input, send);
  const panel = el("div", { class: "p", id: "rw-panel", role: "dialog", "aria-labelledby": "rw-title", hidden: "" },
    el("header", {}, title, close), log, form);
  root.append(launcher, panel);

  const theme = (c) => {
    c = /^#[0-9a-f]{6}$/i.test(c || "") ? c : "#2f6fed";
    const [r, g, b] = [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16));
    host.style.setProperty("--c", c);
    host.style.setProperty("--t", r * 0.299 + g * 0.587 + b * 0.114 > 160 ? "#111" : "#fff");
  };
  theme();

  const say = (cls, text) => {
    const m = el("div", { class: "m " + cls }, text);
    log.append(m);
    log.scrollTop = log.scrollHeight;
    return m;
  };
  const problemText = (status, body, retry) => {
    if (status === 429) {
      const n = Math.max(1, Math.ceil(Number(retry) || 30));
      return `Too many questions right now. Please try again in ${n} s.`;
    }
    if (status === 403) return "This chat isn't available on this site.";
    if (status === 404) return "This chat is not available.";
    if (status === 401) return "Your chat session has expired. Please reload the page.";
    const d = body && (body.detail || body.title);
    return (d ? String(d).replace(/\.$/, "") : "Something went wrong") + ". Please try again later.";
  };
  const fail = (status, body, retry) => say("e", problemText(status, body, retry));

  class Http extends Error {
    constructor(status, body, retry) { super("HTTP " + status); Object.assign(this, { status, body, retry }); }
  }
  const readProblem = async (r) => {
    let body = null;
    try { body = await r.json(); } catch (e) { /* not JSON */ }
    return new Http(r.status, body, r.headers.get("Retry-After"));
  };

  // --- token: fetched at load (theme, greeting), renewed before expiry.
  const tokenFetch = async (renew) => {
    const body = { widget_id: widgetId };
    if (renew) body.renew = renew;
    const r = await fetch(api + "/embed/token", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (!r.ok) throw await readProblem(r);
    return r.json();
  };
  // One request at a time: the load-time fetch and a first question share it.
  let pending = null;
  const token = (force) => {
    if (!force && s.token && s.exp - Date.now() > 60e3) return Promise.resolve(s.token);
    return pending || (pending = fresh().finally(() => { pending = null; }));
  };
  const fresh = async () => {
    let t;
    try {
      t = await tokenFetch(s.token);
    } catch (e) {
      if (!s.token || !(e instanceof Http) || e.status === 429) throw e;
      // The old token was refused as proof: a new visitor, a new conversation.
      s = {};
      t = await tokenFetch();
    }
    if (t.visitor_id !== s.visitor) delete s.session;
    Object.assign(s, { token: t.token, exp: Date.now() + t.expires_in * 1e3, ws: t.workspace_id, visitor: t.visitor_id, widget: t.widget });
    save();
    // Renewed ahead of time only while the panel is open; otherwise the
    // next question renews it (a lapsed token still proves the visitor).
    clearTimeout(renewTimer);
    renewTimer = setTimeout(() => { if (!panel.hidden) token(true).catch(() => {}); }, Math.max(10e3, t.expires_in * 1e3 - 60e3));
    return s.token;
  };

  // --- answers: citations render as numbered links to a list of sources.
  const render = (bubble, text, cites, shown) => {
    bubble.textContent = "";
    const parts = text.split(/\[(\d+)\]/);
    parts.forEach((p, i) => {
      if (i % 2 === 0) { if (p) bubble.append(p); return; }
      const c = cites[p - 1];
      if (!c) return;
      const a = el("a", { href: "#", "aria-label": "Source " + p + ": " + c.title,
        onclick: (ev) => { ev.preventDefault(); const li = bubble.querySelector('[data-n="' + p + '"]'); if (li) { li.scrollIntoView({ block: "nearest" }); li.focus(); } } }, p);
      bubble.append(el("sup", {}, a));
    });
    if (shown && shown.length) {
      const ol = el("ol", { "aria-label": "Sources" });
      for (const n of shown) {
        const c = cites[n - 1];
        if (!c) continue;
        const where = [c.locator && c.locator.page && "p. " + c.locator.page, c.locator && c.locator.heading].filter(Boolean).join(", ");
        const snip = (c.snippet || "").replace(/\s+/g, " ").trim();
        ol.append(el("li", { value: n, "data-n": n, tabindex: "-1", class: "c" },
          el("b", {}, c.title + (where ? " (" + where + ")" : "")),
          el("span", {}, snip.length > 160 ? snip.slice(0, 157) + "\u2026" : snip)));
      }
      bubble.append(ol);
    }
    log.scrollTop = log.scrollHeight;
  };

  const chatBody = (message) => JSON.stringify(s.session ? { message, session_id: s.session } : { message });
  const post = async (base, path, message) => fetch(base + "/workspaces/" + s.ws + path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: "Bearer " + (await token()) },
    body: chatBody(message),
  });

  // Streams; returns false when nothing arrived and the buffered route should answer.
  const streamed = async (message, bubble) => {
    let r;
    try { r = await post(streamApi, "/chat/stream", message); } catch (e) { return false; }
    if (r.status >= 500) return false;
    if (!r.ok) throw await readProblem(r);
    if (!r.body || !/event-stream/.test(r.headers.get("Content-Type") || "")) return false;
    const reader = r.body.getReader(), dec = new TextDecoder();
    let buf = "", text = "", cites = [], any = false, end = false;
    for (;;) {
      let chunk;
      try { chunk = await reader.read(); } catch (e) { if (!any) return false; break; }
      if (chunk.done) break;
      buf += dec.decode(chunk.value, { stream: true }).replace(/\r\n?/g, "\n");
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let name = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data += (data ? "\n" : "") + line.slice(5).replace(/^ /, "");
        }
        if (!data) continue;
        let d;
        try { d = JSON.parse(data); } catch (e) { continue; }
        any = true;
        bubble.classList.remove("w");
        if (name === "citations") cites = d.citations || [];
        else if (name === "delta") { text += d.text || ""; render(bubble, text, cites); }
        else if (name === "done") {
          if (d.session_id) { s.session = d.session_id; save(); }
          render(bubble, text, cites, d.cited || []);
          end = true;
        } else if (name === "error") {
          fail(d.status, d);
          end = true;
        }
      }
    }
    if (!any) return false;
    if (!end) say("e", "The answer was cut off. Please try again.");
    return true;
  };

  const buffered = async (message, bubble) => {
    const r = await post(api, "/chat", message);
    if (!r.ok) throw await readProblem(r);
    const d = await r.json();
    if (d.session_id) { s.session = d.session_id; save(); }
    bubble.classList.remove("w");
    const cites = d.citations || [];
    render(bubble, d.answer || "", cites, cites.map((_, i) => i + 1));
  };

  const ask = async (message) => {
    busy = true;
    send.disabled = true;
    log.setAttribute("aria-busy", "true");
    say("u", message);
    const bubble = say("a w", "");
    try {
      if (refused) throw new Http(403);
      let retried = false;
      for (;;) {
        try {
          // Which route answered, for the browser test and for debugging.
          host.dataset.route = "stream";
          if (!(await streamed(message, bubble))) {
            host.dataset.route = "buffered";
            await buffered(message, bubble);
          }
          break;
        } catch (e) {
          // A token that lapsed (the tab slept): renew once and ask again.
          if (e instanceof Http && e.status === 401 && !retried) { retried = true; await token(true); continue; }
          throw e;
        }
      }
    } catch (e) {
      bubble.remove();
      if (e instanceof Http) fail(e.status, e.body, e.retry);
      else say("e", "The assistant can't be reached. Check your connection and try again.");
    } finally {
      bubble.classList.remove("w");
      if (!bubble.textContent && bubble.isConnected) bubble.remove();
      busy = false;
      send.disabled = false;
      log.removeAttribute("aria-busy");
      input.focus();
    }
  };

  const open = () => {
    panel.hidden = false;
    launcher.setAttribute("aria-expanded", "true");
    launcher.setAttribute("aria-label", "Close chat");
    input.focus();
  };
  const shut = () => {
    panel.hidden = true;
    launcher.setAttribute("aria-expanded", "false");
    launcher.setAttribute("aria-label", "Open chat");
    launcher.focus();
  };
  const toggle = () => (panel.hidden ? open() : shut());
  launcher.addEventListener("click", toggle);
  close.addEventListener("click", shut);
  panel.addEventListener("keydown", (e) => { if (e.key === "Escape") shut(); });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = input.value.trim();
    if (!q || busy) return;
    input.value = "";
    ask(q);
  });

  const start = () => {
    document.body.append(host);
    token().then(() => {
      const widget = s.widget || {};
      theme(widget.theme_color);
      title.textContent = widget.name || "Chat";
      if (widget.greeting) say("a", widget.greeting);
      host.dataset.state = "ready";
    }, (e) => {
      const http = e instanceof Http;
      host.dataset.state = http && e.status === 403 ? "refused" : "error";
      const text = http ? problemText(e.status, e.body, e.retry) : "The assistant can't be reached right now.";
      // Only a refusal is final; after anything else a question tries again.
      if (host.dataset.state === "refused") refused = text;
      say("e", text);
    }).finally(() => mark("ready"));
  };
  window.RagwayWidget = { open, close: shut, toggle };
  if (document.body) start();
  else document.addEventListener("DOMContentLoaded", start);
})();
