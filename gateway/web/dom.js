// A tiny element builder. Strings always become text nodes: nothing here (or
// anywhere in the client) ever assigns innerHTML, so message bodies and names
// are shown literally.

/**
 * h('button', { class: 'x', dataset: { testid: 'send' }, onclick: fn }, 'Send')
 * Attribute values are set with setAttribute (never as markup); `on*` keys add
 * listeners; `dataset` sets data-* attributes; children may be nodes, strings,
 * numbers, arrays or null.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'dataset') {
      for (const [k, v] of Object.entries(value)) {
        if (v !== undefined && v !== null) el.dataset[k] = String(v);
      }
    } else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'text') {
      el.textContent = String(value);
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Sets text only when it changed (keeps the DOM quiet for screen readers). */
export function setText(el, text) {
  const s = String(text);
  if (el.textContent !== s) el.textContent = s;
}

/** Toggles the hidden attribute. */
export function show(el, visible) {
  if (el.hidden === !!visible) el.hidden = !visible;
}

/** A random id safe for client_msg_id (ASCII letters, digits and '-'). */
export function randomId(prefix = '') {
  if (globalThis.crypto && typeof crypto.randomUUID === 'function') {
    try {
      return prefix + crypto.randomUUID();
    } catch {
      // randomUUID needs a secure context; fall through.
    }
  }
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
