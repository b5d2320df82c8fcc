// The chat page: conversations (store.js), streaming answers from /v1/chat/completions (or
// /v1/completions for models without a chat template), Markdown (markdown.js, DOM nodes only:
// model output is never parsed as HTML), sampling settings, API key prompt (common.js).

import { api, apiKey, askKey, AuthError, copyText, el, errorText, setApiKey } from "./common.js";
import { renderMarkdown } from "./markdown.js";
import * as store from "./store.js";

const $ = (id) => document.getElementById(id);

const state = {
  info: null,
  models: [],
  convs: store.loadConversations(),
  currentId: null,
  settings: store.loadSettings(),
  controller: null, // the AbortController of the answer being streamed
  editing: -1, // index of the user message being edited
};

const current = () => state.convs.find((c) => c.id === state.currentId) || null;

function save() {
  store.saveConversations(state.convs);
}

function banner(text) {
  const b = $("banner");
  b.textContent = text || "";
  b.hidden = !text;
}

// --- start-up -------------------------------------------------------------------------------

async function boot() {
  wireStatic();
  for (;;) {
    try {
      const r = await api("/v1/models");
      if (!r.ok) throw new Error(await errorText(r));
      state.models = (await r.json()).data.map((m) => m.id);
      const i = await api("/ui/info");
      if (!i.ok) throw new Error(await errorText(i));
      state.info = await i.json();
      break;
    } catch (e) {
      if (e instanceof AuthError) {
        const had = apiKey();
        setApiKey("");
        await askKey(had ? "The server did not accept that key. Try again." : "This server needs an API key.");
        continue;
      }
      banner("Cannot reach the server: " + e.message);
      return;
    }
  }
  $("forget-key").hidden = !apiKey();
  const sel = $("model");
  sel.replaceChildren(...state.models.map((m) => el("option", { value: m, text: m })));
  const mode = serverMode();
  $("mode").textContent = mode === "chat" ? "chat" : "completion (no chat template)";
  $("mode").title =
    mode === "chat"
      ? "Messages go through the model's chat template (/v1/chat/completions)"
      : "This model has no chat template: prompts are continued as plain text (/v1/completions)";
  $("system-row").hidden = mode !== "chat";
  if (mode !== "chat") $("prompt").placeholder = "The beginning of a text for the model to continue (Enter to send)";
  const d = state.info.sampling_defaults || {};
  $("temperature").placeholder = d.temperature !== undefined ? `server default ${round(d.temperature)}` : "";
  $("top_p").placeholder = d.top_p !== undefined ? `server default ${round(d.top_p)}` : "";
  $("max_tokens").placeholder = "server default";
  const last = state.convs.filter((c) => c.mode === mode).sort((a, b) => b.updated - a.updated)[0];
  if (last) select(last.id);
  else newChat();
  document.body.classList.add("ready");
}

function serverMode() {
  return state.info && state.info.chat ? "chat" : "completion";
}

function round(x) {
  return Math.round(x * 1000) / 1000;
}

function wireStatic() {
  $("new-chat").addEventListener("click", () => {
    newChat();
    closeOverlays();
  });
  $("toggle-sidebar").addEventListener("click", () => document.body.classList.toggle("show-sidebar"));
  $("toggle-settings").addEventListener("click", () => document.body.classList.toggle("show-settings"));
  $("close-settings").addEventListener("click", () => document.body.classList.remove("show-settings"));
  $("scrim").addEventListener("click", closeOverlays);
  $("forget-key").addEventListener("click", () => {
    setApiKey("");
    location.reload();
  });
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  $("stop").addEventListener("click", stop);
  $("model").addEventListener("change", () => {
    const c = current();
    if (c) {
      c.model = $("model").value;
      save();
    }
  });
  for (const k of Object.keys(store.DEFAULT_SETTINGS)) {
    const input = $(k);
    input.value = state.settings[k];
    input.addEventListener("input", () => {
      state.settings[k] = input.value;
      store.saveSettings(state.settings);
    });
  }
}

function closeOverlays() {
  document.body.classList.remove("show-sidebar", "show-settings");
}

// --- conversations --------------------------------------------------------------------------

function newChat() {
  const c = current();
  if (c && !c.messages.length && c.mode === serverMode()) return select(c.id);
  const n = store.newConversation(serverMode(), $("model").value || state.models[0]);
  state.convs.push(n);
  save();
  select(n.id);
}

function select(id) {
  if (state.controller) stop();
  state.currentId = id;
  state.editing = -1;
  const c = current();
  if (c && state.models.includes(c.model)) $("model").value = c.model;
  renderSidebar();
  renderMessages();
  $("prompt").focus();
}

function renderSidebar() {
  const nav = $("conversations");
  const list = [...state.convs].sort((a, b) => b.updated - a.updated);
  nav.replaceChildren(
    ...list.map((c) => {
      const item = el("div", { class: "conv" + (c.id === state.currentId ? " current" : "") });
      const title = el("button", {
        type: "button",
        class: "conv-title",
        text: c.title,
        title: c.title,
        onclick: () => {
          select(c.id);
          closeOverlays();
        },
      });
      const rename = el("button", {
        type: "button",
        class: "icon small rename",
        "aria-label": "Rename",
        title: "Rename",
        text: "✎",
        onclick: () => startRename(item, c),
      });
      const del = el("button", {
        type: "button",
        class: "icon small delete",
        "aria-label": "Delete",
        title: "Delete",
        text: "✕",
        onclick: () => remove(c),
      });
      item.append(title, rename, del);
      return item;
    })
  );
}

function startRename(item, c) {
  const input = el("input", { class: "rename-input", value: c.title, "aria-label": "Conversation name" });
  let done = false;
  const finish = (keep) => {
    if (done) return;
    done = true;
    const v = input.value.trim();
    if (keep && v) {
      c.title = v.slice(0, 200);
      save();
    }
    renderSidebar();
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") finish(true);
    if (e.key === "Escape") finish(false);
  });
  input.addEventListener("blur", () => finish(true));
  item.replaceChildren(input);
  input.focus();
  input.select();
}

function remove(c) {
  if (!confirm(`Delete "${c.title}"?`)) return;
  if (c.id === state.currentId && state.controller) stop();
  state.convs = state.convs.filter((x) => x.id !== c.id);
  save();
  if (c.id === state.currentId) {
    state.currentId = null;
    newChat();
  } else {
    renderSidebar();
  }
}

// --- messages -------------------------------------------------------------------------------

const LABELS = { user: "You", assistant: "Assistant", prompt: "Prompt", completion: "Completion" };

function renderMessages() {
  const c = current();
  const box = $("messages");
  if (!c) return box.replaceChildren();
  if (!c.messages.length) {
    box.replaceChildren(
      el(
        "div",
        { class: "empty" },
        el("h2", { text: c.mode === "chat" ? "Start a conversation" : "Plain completion" }),
        el("p", {
          text:
            c.mode === "chat"
              ? `Chatting with ${c.model}. Answers stream as they are generated; Stop cancels the request on the server.`
              : `${c.model} has no chat template: write the beginning of a text and the model continues it.`,
        })
      )
    );
    return;
  }
  box.replaceChildren(...c.messages.map((m, i) => messageView(c, m, i)));
  box.scrollTop = box.scrollHeight;
}

function messageView(c, m, i) {
  const busy = !!state.controller;
  const last = i === c.messages.length - 1;
  const wrap = el("article", { class: `msg ${m.role}` + (m.pending ? " pending" : ""), "data-index": i });
  wrap.append(el("div", { class: "role", text: LABELS[m.role] || m.role }));
  if (state.editing === i) {
    const ta = el("textarea", { class: "edit-box", rows: 4 });
    ta.value = m.content;
    wrap.append(
      ta,
      el(
        "div",
        { class: "actions" },
        el("button", { type: "button", class: "primary resend", text: "Send", onclick: () => resend(i, ta.value) }),
        el("button", {
          type: "button",
          text: "Cancel",
          onclick: () => {
            state.editing = -1;
            renderMessages();
          },
        })
      )
    );
    setTimeout(() => ta.focus(), 0);
    return wrap;
  }
  const body = el("div", { class: "content" });
  fillContent(body, c, m);
  wrap.append(body);
  if (m.error) wrap.append(el("div", { class: "error", text: m.error }));
  if (m.stats) wrap.append(el("div", { class: "stats", text: statsText(m.stats) }));
  const actions = el("div", { class: "actions" });
  if ((m.role === "user" || m.role === "prompt") && !busy) {
    actions.append(
      el("button", {
        type: "button",
        class: "edit",
        text: "Edit",
        onclick: () => {
          state.editing = i;
          renderMessages();
        },
      })
    );
  }
  if ((m.role === "assistant" || m.role === "completion") && !m.pending) {
    actions.append(el("button", { type: "button", class: "copy-msg", text: "Copy", onclick: (e) => copyButton(e, m.content) }));
    if (last && !busy) actions.append(el("button", { type: "button", class: "regenerate", text: "Regenerate", onclick: regenerate }));
  }
  if (actions.childNodes.length) wrap.append(actions);
  return wrap;
}

function fillContent(body, c, m) {
  if (m.role === "assistant") {
    renderMarkdown(m.content, body);
  } else if (m.role === "completion") {
    // A continuation: plain text after the prompt, whitespace kept.
    body.classList.add("plain");
    body.textContent = m.content;
  } else {
    body.classList.add("plain");
    body.textContent = m.content;
  }
  if (m.pending && !m.content) body.append(el("span", { class: "cursor", text: "…" }));
}

async function copyButton(e, text) {
  const b = e.currentTarget;
  b.textContent = (await copyText(text)) ? "Copied" : "Copy failed";
  setTimeout(() => (b.textContent = "Copy"), 1500);
}

function statsText(s) {
  const parts = [];
  if (s.tokens !== undefined) parts.push(`${s.tokens}${s.approx ? "~" : ""} tokens`);
  if (s.tps !== null && s.tps !== undefined) parts.push(`${s.tps.toFixed(1)} tok/s`);
  if (s.ttft_ms !== null && s.ttft_ms !== undefined) parts.push(`TTFT ${Math.round(s.ttft_ms)} ms`);
  if (s.finish) parts.push(s.finish === "stopped" ? "stopped" : `finish: ${s.finish}`);
  return parts.join(" · ");
}

// --- sending --------------------------------------------------------------------------------

function send() {
  const c = current();
  const text = $("prompt").value;
  if (!c || state.controller || !text.trim()) return;
  $("prompt").value = "";
  c.messages.push({ role: c.mode === "chat" ? "user" : "prompt", content: text });
  if (c.title === "New chat") c.title = text.trim().replace(/\s+/g, " ").slice(0, 48);
  generate(c);
}

function regenerate() {
  const c = current();
  if (!c || state.controller) return;
  const m = c.messages[c.messages.length - 1];
  if (m && (m.role === "assistant" || m.role === "completion")) c.messages.pop();
  generate(c);
}

function resend(i, text) {
  const c = current();
  if (!c || state.controller || !text.trim()) return;
  c.messages = c.messages.slice(0, i + 1);
  c.messages[i] = { role: c.messages[i].role, content: text };
  state.editing = -1;
  generate(c);
}

function stop() {
  if (state.controller) state.controller.abort();
}

function samplingFields() {
  const s = state.settings;
  const out = {};
  const num = (k, int) => {
    const v = String(s[k]).trim();
    if (!v) return;
    const x = Number(v);
    out[k] = Number.isFinite(x) ? (int ? Math.trunc(x) : x) : v;
  };
  num("temperature");
  num("top_p");
  num("max_tokens", true);
  num("seed", true);
  return out;
}

function requestFor(c) {
  const model = $("model").value || c.model;
  const common = { model, stream: true, stream_options: { include_usage: true }, ...samplingFields() };
  const history = c.messages.slice(0, -1);
  if (c.mode === "chat") {
    const messages = [];
    const system = state.settings.system.trim();
    if (system) messages.push({ role: "system", content: system });
    for (const m of history) {
      if (m.role === "user" || m.role === "assistant") messages.push({ role: m.role, content: m.content });
    }
    return ["/v1/chat/completions", { ...common, messages }];
  }
  const prompt = [...history].reverse().find((m) => m.role === "prompt");
  return ["/v1/completions", { ...common, prompt: prompt ? prompt.content : "" }];
}

async function generate(c) {
  const msg = { role: c.mode === "chat" ? "assistant" : "completion", content: "", pending: true };
  c.messages.push(msg);
  c.updated = Date.now();
  const [path, body] = requestFor(c);
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  save();
  renderSidebar();
  renderMessages();
  const view = () => $("messages").querySelector(`article[data-index="${c.messages.indexOf(msg)}"]`);
  let frame = 0;
  const paint = () => {
    frame = 0;
    const v = view();
    if (!v) return;
    const box = $("messages");
    const stick = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    fillContent(v.querySelector(".content"), c, msg);
    if (stick) box.scrollTop = box.scrollHeight;
  };
  const t0 = performance.now();
  let tFirst = null;
  let chunks = 0;
  let usage = null;
  let finish = null;
  try {
    const r = await api(path, { method: "POST", json: body, signal: controller.signal });
    if (!r.ok) throw new Error(await errorText(r));
    for await (const data of events(r.body)) {
      if (data === "[DONE]") break;
      const j = JSON.parse(data);
      if (j.error) throw new Error(j.error.message || "the server reported an error");
      if (j.usage) usage = j.usage;
      for (const ch of j.choices || []) {
        const t = c.mode === "chat" ? ch.delta && ch.delta.content : ch.text;
        if (t) {
          if (tFirst === null) tFirst = performance.now();
          msg.content += t;
          chunks++;
          if (!frame) frame = requestAnimationFrame(paint);
        }
        if (ch.finish_reason) finish = ch.finish_reason;
      }
    }
  } catch (e) {
    if (e.name === "AbortError") finish = "stopped";
    else if (e instanceof AuthError) msg.error = "The server did not accept the API key; reload the page to enter it again.";
    else msg.error = e.message;
  }
  const tEnd = performance.now();
  const tokens = usage ? usage.completion_tokens : chunks;
  msg.stats = {
    tokens,
    approx: !usage,
    ttft_ms: tFirst === null ? null : tFirst - t0,
    tps: tFirst !== null && tokens > 1 && tEnd > tFirst ? ((tokens - 1) * 1000) / (tEnd - tFirst) : null,
    finish,
  };
  delete msg.pending;
  if (frame) cancelAnimationFrame(frame);
  state.controller = null;
  c.updated = Date.now();
  save();
  setBusy(false);
  if (state.currentId === c.id) renderMessages();
}

// The `data:` payloads of a server-sent event stream.
async function* events(body) {
  const reader = body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let m;
    while ((m = /\r?\n\r?\n/.exec(buf))) {
      const ev = buf.slice(0, m.index);
      buf = buf.slice(m.index + m[0].length);
      const data = ev
        .split(/\r?\n/)
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, ""))
        .join("\n");
      if (data) yield data;
    }
  }
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  document.body.classList.toggle("busy", busy);
}

boot();
