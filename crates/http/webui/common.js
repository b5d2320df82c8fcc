// Shared by the chat page and the dashboard: DOM building, the API key (kept in this tab's
// sessionStorage only, never in localStorage) and fetch with it.

const KEY = "switchyard.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setApiKey(k) {
  if (k) sessionStorage.setItem(KEY, k);
  else sessionStorage.removeItem(KEY);
}

export class AuthError extends Error {}

// fetch() with the key; `json` becomes the body. A 401 throws AuthError.
export async function api(path, opts = {}) {
  const headers = new Headers(opts.headers || {});
  const k = apiKey();
  if (k) headers.set("Authorization", "Bearer " + k);
  const init = { ...opts, headers };
  if (opts.json !== undefined) {
    headers.set("Content-Type", "application/json");
    init.body = JSON.stringify(opts.json);
    delete init.json;
  }
  const r = await fetch(path, init);
  if (r.status === 401) throw new AuthError("the server did not accept the API key");
  return r;
}

// The message of an OpenAI-shaped error response.
export async function errorText(r) {
  try {
    const j = await r.json();
    return (j.error && j.error.message) || `${r.status} ${r.statusText}`;
  } catch {
    return `${r.status} ${r.statusText}`;
  }
}

// el("div", {class: "x", onclick: f}, "text", child): text is always a text node.
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    e.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return e;
}

// Shows the key dialog (#key-dialog) with `message`; resolves once a key was entered.
export function askKey(message) {
  const dlg = document.getElementById("key-dialog");
  const form = document.getElementById("key-form");
  const input = document.getElementById("key-input");
  document.getElementById("key-message").textContent = message;
  input.value = "";
  return new Promise((resolve) => {
    const done = (ev) => {
      ev.preventDefault();
      const k = input.value.trim();
      if (!k) return;
      form.removeEventListener("submit", done);
      setApiKey(k);
      dlg.close();
      resolve();
    };
    form.addEventListener("submit", done);
    if (!dlg.open) dlg.showModal();
    input.focus();
  });
}

// Copies text, with a fallback where the Clipboard API is unavailable (plain http).
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const t = el("textarea", { class: "offscreen" });
    t.value = text;
    document.body.append(t);
    t.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch {
      ok = false;
    }
    t.remove();
    return ok;
  }
}
