// Conversations and settings in the browser's localStorage (never the API key: common.js keeps
// that in sessionStorage). A conversation: {id, title, mode: "chat" | "completion", model,
// messages: [{role, content, stats?, error?}], created, updated}.

const CONVS = "switchyard.conversations.v1";
const SETTINGS = "switchyard.settings.v1";

function read(key, fallback) {
  try {
    const v = JSON.parse(localStorage.getItem(key));
    return v === null ? fallback : v;
  } catch {
    return fallback;
  }
}

function write(key, v) {
  try {
    localStorage.setItem(key, JSON.stringify(v));
  } catch (e) {
    console.warn("switchyard: could not save to localStorage", e);
  }
}

export function loadConversations() {
  const v = read(CONVS, []);
  return Array.isArray(v) ? v.filter((c) => c && Array.isArray(c.messages)) : [];
}

export function saveConversations(list) {
  write(CONVS, list);
}

export function newConversation(mode, model) {
  const now = Date.now();
  return {
    id: now.toString(36) + Math.random().toString(36).slice(2, 8),
    title: "New chat",
    mode,
    model,
    messages: [],
    created: now,
    updated: now,
  };
}

export const DEFAULT_SETTINGS = {
  system: "",
  temperature: "",
  top_p: "",
  max_tokens: "",
  seed: "",
};

export function loadSettings() {
  return { ...DEFAULT_SETTINGS, ...read(SETTINGS, {}) };
}

export function saveSettings(s) {
  write(SETTINGS, s);
}
