// A tiny element builder: h("p", {class: "hint"}, "text", child). Text is always set as text,
// never parsed as HTML, so server messages and user input cannot inject markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Show a message in the banner at the top of the page; an empty message hides it. */
export function banner(message, kind = "error") {
  const el = document.getElementById("banner");
  el.textContent = message || "";
  el.className = `banner ${kind}`;
  el.hidden = !message;
}
