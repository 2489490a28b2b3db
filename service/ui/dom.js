// Building DOM nodes without markup strings: text from job data is never parsed as HTML.

/**
 * h("a", {class: "x", href: "#/", on: {click: fn}, dataset: {id: "1"}}, "text", child, ...)
 * Attributes named in PROPS are set as properties, the rest as attributes; null/false skip.
 */
const PROPS = new Set(["value", "checked", "disabled", "hidden", "open", "textContent"]);

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "on") {
      for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else if (key === "class") {
      node.className = value;
    } else if (PROPS.has(key)) {
      node[key] = value;
    } else {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace `node`'s children with `children` (arrays flattened, null/false left out). */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

let toastTimer = 0;

/** Show `message` in the page's toast for a few seconds (kind: "info" or "error"). */
export function toast(message, kind = "info") {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.className = `toast ${kind}`;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    box.hidden = true;
  }, 5000);
}

/** A status badge: its colour comes from the status name (see style.css). */
export function badge(status) {
  return h("span", { class: `badge status-${String(status).toLowerCase()}` }, status);
}
