// Small DOM helpers. Data (run, tag, description text) only ever becomes
// text nodes or attribute values, never markup.

/**
 * el("div", {class: "x", onclick: f, dataset: {a: 1}}, "text", child)
 * Keys starting with "on" add listeners; `dataset` and `style` objects are
 * copied; other keys become attributes (null/false: left out).
 */
export function el(tag, props = {}, ...children) {
  const node = tag === "svg" || tag === "polyline" || tag === "line"
    ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "style" && typeof v === "object") Object.assign(node.style, v);
    else if (k === "value" || k === "checked" || k === "selected") node[k] = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the children of `node`. */
export function setChildren(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** A <select> whose options are [value, label] pairs (or plain strings). */
/**
 * Replaces `node`'s children with `make()` unless they were made for the same `key`
 * (a string): new children are laid out and painted again, the whole view with them.
 */
export function refill(node, key, make) {
  if (node.filledKey === key) return;
  node.filledKey = key;
  node.replaceChildren(...make());
}

export function fillSelect(select, options, value) {
  refill(select, JSON.stringify(options), () => options.map((o) => {
    const [v, label] = Array.isArray(o) ? o : [o, o];
    return el("option", { value: v }, label);
  }));
  if (value !== undefined && options.some((o) => (Array.isArray(o) ? o[0] : o) === value)) {
    select.value = value;
  }
  return select;
}

/** Formats a number compactly for labels and tooltips. */
/** Sizes `canvas` to `img` ({data, width, height}: RGBA pixels, 1 css px each) and puts it there. */
export function paintPixels(canvas, img) {
  canvas.width = img.width;
  canvas.height = img.height;
  canvas.style.width = `${img.width}px`;
  canvas.style.height = `${img.height}px`;
  if (img.width && img.height) {
    canvas.getContext("2d").putImageData(new ImageData(img.data, img.width, img.height), 0, 0);
  }
}

export function fmt(v, digits = 4) {
  if (v === null || v === undefined) return "—";
  if (Number.isNaN(v)) return "NaN";
  if (!Number.isFinite(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(digits - 1);
  return Number(v.toPrecision(digits)).toString();
}

/**
 * Resolves once the frame the page has scheduled is painted (the grids draw in
 * animation frames): what waits for it comes after the first pixels. A timer
 * stands in where frames do not run (a hidden page).
 */
export function afterPaint(fallbackMs = 250) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, fallbackMs);
    requestAnimationFrame(() => setTimeout(() => {
      clearTimeout(timer);
      resolve();
    }, 0));
  });
}
