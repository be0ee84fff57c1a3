// The dataset examples of an activation (issue 28), drawn with examplepixels.js:
// ExampleStrips (one per panel, right of its grid: each filter's k crops at the shown
// step, beside its row for a kernel's filters, else a list labelled by channel) and
// ExampleDetail (one filter's examples on their whole inputs, where it fired outlined).
// Where strips go is examplerows.js.

import * as api from "./api.js";
import { decodeBinary } from "./binary.js";
import { el, fmt, setChildren } from "./dom.js";
import { boxOf, boxRect, imagePixels, overlayPixels } from "./examplepixels.js";
import { rowPlaces, STRIP_GAP, storedRow, stripSize, stripsWidth } from "./examplerows.js";

const DETAIL_PX = 160;
/** Filters one request of strips fetches (the route's rows=). */
export const MAX_STRIP_ROWS = 64;
/** k assumed (the writers' default) until an answer says. */
const DEFAULT_K = 9;

function scaleFor(h, w, most) {
  return Math.max(1, Math.floor(most / Math.max(h, w)));
}

/** Draws RGBA `img` ({width, height, data}) at integer `scale` into `ctx` at (x, y). */
function blit(ctx, img, x, y, scale) {
  const tmp = document.createElement("canvas");
  tmp.width = img.width;
  tmp.height = img.height;
  tmp.getContext("2d").putImageData(new ImageData(img.data, img.width, img.height), 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(tmp, x, y, img.width * scale, img.height * scale);
}

/** The decoded answer of the examples route, with per-example image helpers. */
function prepared(answer) {
  const input = answer.input;
  if (!input || !answer.crops) return { answer, images: false };
  const layout = input.layout.slice(1);
  const crops = decodeBinary(answer.crops);
  const per = crops.shape.slice(2);
  const size = per.reduce((a, b) => a * b, 1);
  const range = input.range || [0, 1];
  const inputShape = input.shape.slice(1);
  const crop = (r, j) => imagePixels(crops.array, (r * answer.k + j) * size, layout, per, range,
    answer.field ? { box: boxOf(answer.field, answer.positions[r][j]), inputShape } : {});
  return { answer, images: true, layout, crops, crop, range, inputShape };
}

/** The canvas of row `r`'s strip (k crops, best first), labelled `label`; or its input indices as text. */
function stripNode(p, r, label, row) {
  const answer = p.answer;
  const data = { filter: String(label), row: String(row) };
  const labelNode = el("span", { class: "examples-label" }, String(label));
  if (!p.images) {
    return el("div", { class: "examples-row", dataset: data }, labelNode, answer.indices[r].map((i) => `#${i} `).join(""));
  }
  const first = p.crop(r, 0);
  const size = stripSize(first.height, first.width, answer.k);
  const canvas = el("canvas", {
    class: "examples-strip",
    width: size.width,
    height: size.height,
    dataset: { ...data, scale: String(size.scale), tile: String(size.tile), gap: String(STRIP_GAP) },
    title: answer.indices[r].map((i, j) => `#${i}: ${fmt(answer.values[r][j])}`).join("\n"),
  });
  canvas.style.width = `${size.width}px`;
  canvas.style.height = `${size.height}px`;
  const ctx = canvas.getContext("2d");
  for (let j = 0; j < answer.k; j++) blit(ctx, j ? p.crop(r, j) : first, j * (size.tile + STRIP_GAP), 0, size.scale);
  const node = el("div", { class: "examples-row", dataset: data }, labelNode, canvas);
  node.crop = { h: first.height, w: first.width, k: answer.k };
  return node;
}

/**
 * The strips of one panel, right of its grid. `showRows(run, tag, step, actInfo, view)`:
 * a kernel's filters (the rows of GridView `view`, stacked): each one's strip beside its
 * row, fetched as rows come into view, placed again by `place(view)` after every draw
 * (zoom, pan, sort, resize). `showList(run, tag, step, labels, actInfo)`: a list of the
 * strips of channels `labels` (display order), each labelled. `tag` is the activation
 * with the examples, `actInfo` its tags entry (a label is matched to its stored row).
 * `say(text)`; `hide()`; `width()`: css px the strips need. `onWidth()` is called when
 * that changes (an answer's k).
 */
export class ExampleStrips {
  constructor({ onWidth = () => {} } = {}) {
    this.title = el("div", { class: "examples-title" });
    this.list = el("div", { class: "examples-list" });
    this.rowsBox = el("div", { class: "examples-rows" });
    this.node = el("div", { class: "examples", hidden: true }, this.rowsBox, this.title, this.list);
    this.seq = 0;
    this.k = DEFAULT_K;
    this.onWidth = onWidth;
    this.rows = null; // rows mode: {key, run, tag, step, actInfo, strips: Map(row -> node|null), pending, failed}
  }

  width() {
    return stripsWidth(this.k);
  }

  hide() {
    this.seq++;
    this.rows = null;
    this.node.hidden = true;
  }

  say(text) {
    this.node.dataset.state = "message";
    this.title.textContent = text;
    this.list.replaceChildren();
    this.rowsBox.replaceChildren();
  }

  learnK(k) {
    if (k === this.k) return;
    this.k = k;
    this.onWidth();
  }

  open(mode, run, step) {
    this.node.hidden = false;
    this.node.dataset.mode = mode;
    this.node.dataset.run = run;
    this.node.dataset.step = String(step);
  }

  showRows(run, tag, step, actInfo, view) {
    const key = JSON.stringify([run, tag, step]);
    this.open("rows", run, step);
    if (!this.rows || this.rows.key !== key) {
      this.seq++;
      this.rows = { key, run, tag, step, actInfo, strips: new Map(), pending: new Set(), failed: false };
      this.node.dataset.state = "loading";
      this.title.textContent = "";
      this.list.replaceChildren();
      this.rowsBox.replaceChildren();
    }
    this.place(view);
  }

  /** Puts each fetched strip beside its row of `view` (GridView) as drawn now; fetches the rows in view that are missing. */
  place(view) {
    this.view = view;
    const st = this.rows;
    const d = view.data;
    if (this.node.hidden || !d || !d.grid) return;
    const height = view.canvas.height / view.dpr();
    if (!st) {
      this.list.style.maxHeight = `${Math.max(240, height)}px`;
      return;
    }
    const grid = d.grid;
    const places = rowPlaces(grid, view.view, view.dpr(), height) || [];
    this.rowsBox.style.height = `${height}px`;
    // the rows' box starts where the grid canvas starts (both top-aligned); measured, not assumed
    const offset = view.canvas.getBoundingClientRect().top - this.rowsBox.getBoundingClientRect().top;
    const wanted = new Map();
    for (const p of places) {
      const label = grid.filterLabel(grid.filterOf(p.row, 0));
      const row = storedRow(label, st.actInfo);
      if (row >= 0) wanted.set(row, p);
    }
    const missing = [...wanted.keys()].filter((r) => !st.strips.has(r) && !st.pending.has(r));
    if (missing.length && !st.failed) this.fetchRows(st, missing.slice(0, MAX_STRIP_ROWS));
    for (const [row, node] of st.strips) {
      if (!node) continue;
      const p = wanted.get(row);
      node.hidden = !p;
      if (!p) continue;
      node.dataset.slot = String(p.slot);
      const canvas = node.querySelector("canvas");
      let h = p.height;
      if (canvas) {
        const size = stripSize(node.crop.h, node.crop.w, node.crop.k, p.height);
        canvas.style.width = `${size.cssWidth}px`;
        canvas.style.height = `${size.cssHeight}px`;
        h = size.cssHeight;
      }
      node.style.top = `${offset + p.top + Math.max(0, (p.height - h) / 2)}px`;
    }
  }

  async fetchRows(st, rows) {
    rows.forEach((r) => st.pending.add(r));
    let answer;
    try {
      answer = await api.examples(st.run, st.tag, st.step, { rows: [...rows].sort((a, b) => a - b) });
    } catch (e) {
      if (st !== this.rows) return;
      st.failed = true; // said once, not asked again for this step
      this.say(e.status === 404 ? `No dataset examples of ${st.tag} at step ${st.step}: ${e.message}` : `Dataset examples: ${e.message}`);
      return;
    } finally {
      rows.forEach((r) => st.pending.delete(r));
    }
    if (st !== this.rows) return;
    const p = prepared(answer);
    const at = new Map(answer.rows.map((r, i) => [r, i]));
    for (const row of rows) {
      const i = at.get(row);
      // a kept channel whose label is not the filter's: nothing to show
      const node = i === undefined || storedRow(answer.channels[i], st.actInfo) !== row ? null : stripNode(p, i, answer.channels[i], row);
      if (node) this.rowsBox.append(node);
      st.strips.set(row, node);
    }
    this.node.dataset.state = "drawn";
    this.title.textContent = `Dataset examples of ${st.tag} at step ${answer.step}: beside each filter, the ${answer.k} of ${answer.ranked} probe inputs it responds to most`
      + (p.images ? "" : "; no probe inputs were stored, so no crops");
    this.learnK(answer.k);
    if (this.view) this.place(this.view);
  }

  async showList(run, tag, step, labels, actInfo) {
    const seq = ++this.seq;
    this.rows = null;
    this.rowsBox.replaceChildren();
    this.rowsBox.style.height = "0";
    this.open("list", run, step);
    const all = labels.map((label) => ({ label, row: storedRow(label, actInfo) })).filter((x) => x.row >= 0);
    const shown = all.slice(0, MAX_STRIP_ROWS);
    if (!shown.length) {
      this.say(`None of these channels was kept in ${tag}: no dataset examples.`);
      return;
    }
    let answer;
    try {
      answer = await api.examples(run, tag, step, { rows: shown.map((x) => x.row).sort((a, b) => a - b) });
    } catch (e) {
      if (seq === this.seq) this.say(e.status === 404 ? `No dataset examples at step ${step}: ${e.message}` : `Dataset examples: ${e.message}`);
      return;
    }
    if (seq !== this.seq) return;
    const p = prepared(answer);
    this.node.dataset.state = "drawn";
    const more = all.length > shown.length ? ` (the first ${shown.length} of ${all.length} channels)` : "";
    this.title.textContent = `Dataset examples at step ${answer.step}: the ${answer.k} of ${answer.ranked} probe inputs each channel responds to most${more}`
      + (p.images ? "" : "; no probe inputs were stored, so no crops");
    const at = new Map(answer.rows.map((r, i) => [r, i]));
    setChildren(this.list, shown.map((x) => (at.has(x.row) ? stripNode(p, at.get(x.row), answer.channels[at.get(x.row)], x.row) : null)));
    this.learnK(answer.k);
    if (this.view) this.place(this.view);
  }
}

/**
 * One filter's examples on their whole inputs: the receptive-field box outlined, or
 * (field unknown) the example's map laid over in red; with each one's input index and
 * value. `show(run, tag, step, row, what?)` (`row` of activation `tag`; `what` names it
 * in the title); `close()`.
 */
export class ExampleDetail {
  constructor() {
    this.title = el("h4", { class: "examples-detail-title" });
    this.list = el("div", { class: "examples-detail-list" });
    this.node = el("div", { class: "examples-detail", hidden: true }, this.title, this.list);
    this.seq = 0;
  }

  close() {
    this.seq++;
    this.node.hidden = true;
  }

  async show(run, tag, step, filter, what = null) {
    const seq = ++this.seq;
    this.node.hidden = false;
    this.node.dataset.filter = String(filter);
    let answer;
    try {
      answer = await api.examples(run, tag, step, { rows: [filter], whole: true });
    } catch (e) {
      if (seq === this.seq) {
        this.title.textContent = `Dataset examples: ${e.message}`;
        this.list.replaceChildren();
      }
      return;
    }
    if (seq !== this.seq) return;
    this.title.textContent = `Dataset examples of ${what || `channel ${answer.channels[0]}`} at step ${answer.step}`;
    const p = prepared(answer);
    if (!p.images) {
      setChildren(this.list, answer.indices[0].map((i, j) => el("div", {}, `input #${i} · ${fmt(answer.values[0][j])}`)));
      return;
    }
    const whole = answer.field ? decodeBinary(answer.inputs) : p.crops;
    const maps = answer.field ? null : decodeBinary(answer.maps);
    const one = p.inputShape.reduce((a, b) => a * b, 1);
    setChildren(this.list, answer.indices[0].map((index, j) => {
      const img = imagePixels(whole.array, j * one, p.layout, p.inputShape, p.range);
      const scale = scaleFor(img.height, img.width, DETAIL_PX);
      const canvas = el("canvas", {
        class: "examples-input", width: img.width * scale, height: img.height * scale,
        dataset: { scale: String(scale), index: String(index) },
      });
      const ctx = canvas.getContext("2d");
      blit(ctx, img, 0, 0, scale);
      if (answer.field) {
        const b = boxRect(p.layout, answer.field, answer.positions[0][j]);
        ctx.strokeStyle = "#ffd400";
        ctx.lineWidth = 2;
        ctx.strokeRect(b.x * scale + 1, b.y * scale + 1, b.w * scale - 2, b.h * scale - 2);
      } else {
        const mapShape = maps.shape.slice(2);
        const size = mapShape.reduce((a, b) => a * b, 1);
        const over = overlayPixels(maps.array, j * size, mapShape, img.height, img.width, answer.values[0][j]);
        const tmp = document.createElement("canvas");
        tmp.width = over.width;
        tmp.height = over.height;
        tmp.getContext("2d").putImageData(new ImageData(over.data, over.width, over.height), 0, 0);
        ctx.imageSmoothingEnabled = false;
        ctx.drawImage(tmp, 0, 0, over.width * scale, over.height * scale);
      }
      return el("figure", { class: "examples-figure" }, canvas,
        el("figcaption", {}, `input #${index} · ${fmt(answer.values[0][j])}`));
    }));
  }
}
