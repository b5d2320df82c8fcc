// A small Markdown renderer that never parses HTML: it reads model output as plain text and
// builds DOM nodes (text nodes, <p>, <pre>, <code>, <strong>, <em>, lists, headings, quotes and
// links whose URL is http(s) only). Anything that looks like HTML stays text.
// Covers what chat models write: fenced code blocks (with a copy button), inline code, bold,
// italic, bullet and numbered lists (nested by indentation), headings, quotes, rules, links.

import { copyText, el } from "./common.js";

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;

// Renders `text` into `container` (its old content is replaced).
export function renderMarkdown(text, container) {
  const frag = document.createDocumentFragment();
  blocks(text.replace(/\r\n?/g, "\n").split("\n"), frag);
  container.replaceChildren(frag);
}

function blocks(lines, out) {
  let i = 0;
  let para = [];
  const flush = () => {
    if (para.length) out.append(paragraph(para));
    para = [];
  };
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if ((m = FENCE.exec(line))) {
      flush();
      const fence = m[1];
      const body = [];
      i++;
      while (i < lines.length && !closes(lines[i], fence)) body.push(lines[i++]);
      i++; // the closing fence (absent while an answer is still streaming)
      out.append(codeBlock(body.join("\n"), m[2]));
    } else if ((m = HEADING.exec(line))) {
      flush();
      const h = el("h" + Math.min(6, m[1].length + 2), { class: "md-h" + m[1].length });
      inline(m[2], h);
      out.append(h);
      i++;
    } else if (RULE.test(line)) {
      flush();
      out.append(el("hr"));
      i++;
    } else if (QUOTE.test(line)) {
      flush();
      const inner = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
        inner.push(m[1]);
        i++;
      }
      const q = el("blockquote");
      blocks(inner, q);
      out.append(q);
    } else if (ITEM.test(line)) {
      flush();
      i = list(lines, i, out);
    } else if (!line.trim()) {
      flush();
      i++;
    } else {
      para.push(line);
      i++;
    }
  }
  flush();
}

function closes(line, fence) {
  const t = line.trim();
  return t.length >= fence.length && t[0] === fence[0] && /^(`+|~+)$/.test(t);
}

function paragraph(lines) {
  const p = el("p");
  lines.forEach((l, k) => {
    if (k) p.append(el("br"));
    inline(l.trim(), p);
  });
  return p;
}

function indentOf(s) {
  return s.replace(/\t/g, "    ").length;
}

// A list starting at lines[i]; items more indented than the first nest. Returns the next line.
function list(lines, i, out) {
  const first = ITEM.exec(lines[i]);
  const base = indentOf(first[1]);
  const ordered = /\d/.test(first[2]);
  const l = el(ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) l.setAttribute("start", parseInt(first[2], 10));
  let li = null;
  while (i < lines.length) {
    const line = lines[i];
    const m = ITEM.exec(line);
    if (m && indentOf(m[1]) < base) break; // the end of a nested list
    if (m && indentOf(m[1]) <= base + 1) {
      if (/\d/.test(m[2]) !== ordered) break;
      li = el("li");
      inline(m[3], li);
      l.append(li);
      i++;
    } else if (m && li) {
      i = list(lines, i, li);
    } else if (line.trim() && li && indentOf(line.match(/^\s*/)[0]) > base) {
      li.append(el("br"));
      inline(line.trim(), li);
      i++;
    } else {
      break;
    }
  }
  out.append(l);
  return i;
}

function codeBlock(code, lang) {
  const btn = el("button", { type: "button", class: "copy", text: "Copy" });
  btn.addEventListener("click", async () => {
    const ok = await copyText(code);
    btn.textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => (btn.textContent = "Copy"), 1500);
  });
  return el(
    "div",
    { class: "code" },
    el("div", { class: "code-head" }, el("span", { text: lang || "code" }), btn),
    el("pre", {}, el("code", { text: code }))
  );
}

// Inline spans, earliest match first: `code`, [text](http(s) url), bare http(s) URLs,
// **bold** / __bold__, *italic* / _italic_. Everything else is a text node.
const SPANS = [
  ["code", /(`+)([\s\S]*?[^`])\1(?!`)/],
  ["link", /\[([^\]\n]+)\]\(\s*<?([^\s()<>]+)>?\s*\)/],
  ["url", /\bhttps?:\/\/[^\s<>()"'`]*[^\s<>()"'`.,;:!?*_]/],
  ["strong", /\*\*(?=\S)([\s\S]*?\S)\*\*|(?<![\w])__(?=\S)([\s\S]*?\S)__(?![\w])/],
  ["em", /\*(?=[^\s*])([^*]*?[^\s*])\*|(?<![\w])_(?=[^\s_])([^_]*?[^\s_])_(?![\w])/],
];

function inline(text, out) {
  while (text) {
    let best = null;
    for (const [kind, re] of SPANS) {
      const m = re.exec(text);
      if (m && (!best || m.index < best.m.index)) best = { kind, m };
    }
    if (!best) {
      out.append(document.createTextNode(text));
      return;
    }
    const { kind, m } = best;
    if (m.index) out.append(document.createTextNode(text.slice(0, m.index)));
    if (kind === "code") {
      out.append(el("code", { text: m[2].replace(/^ (.*) $/, "$1") }));
    } else if (kind === "link") {
      const href = safeUrl(m[2]);
      if (href) {
        const a = link(href);
        inline(m[1], a);
        out.append(a);
      } else {
        out.append(document.createTextNode(m[0]));
      }
    } else if (kind === "url") {
      const href = safeUrl(m[0]);
      out.append(href ? link(href, m[0]) : document.createTextNode(m[0]));
    } else {
      const e = el(kind);
      inline(m[1] !== undefined ? m[1] : m[2], e);
      out.append(e);
    }
    text = text.slice(m.index + m[0].length);
  }
}

// The URL if it is absolute http(s), else null (javascript:, data:, relative ... stay text).
function safeUrl(s) {
  try {
    const u = new URL(s);
    return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
  } catch {
    return null;
  }
}

function link(href, text) {
  return el("a", { href, target: "_blank", rel: "noopener noreferrer nofollow", text });
}
