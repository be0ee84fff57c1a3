// The dataset examples of an activation (issue 28), drawn with examplepixels.js:
// ExampleStrips (one per panel: each shown filter's k crops at the shown step) and
// ExampleDetail (one filter's examples on their whole inputs, where it fired outlined).

import * as api from "./api.js";
import { el, fmt, setChildren } from "./dom.js";
import { boxOf, boxRect, decodeBinary, imagePixels, overlayPixels } from "./examplepixels.js";

/** Crops are drawn this many css px across at most (an integer scale of their pixels). */
const CROP_PX = 40;
const DETAIL_PX = 160;
const GAP = 2;
/** Filters one strip list fetches (the route's rows=), in the grid's order. */
export const MAX_STRIP_ROWS = 64;

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

/**
 * The strips of one panel: for each filter shown, its k examples' crops, best first.
 * `show(run, tag, step, filters)` fetches and draws (filters: the run's filter of
 * each grid row, in display order); `hide()`.
 */
export class ExampleStrips {
  constructor() {
    this.title = el("div", { class: "examples-title" });
    this.list = el("div", { class: "examples-list" });
    this.node = el("div", { class: "examples", hidden: true }, this.title, this.list);
    this.seq = 0;
  }

  hide() {
    this.seq++;
    this.node.hidden = true;
  }

  async show(run, tag, step, filters, hasExamples) {
    const seq = ++this.seq;
    this.node.hidden = false;
    this.node.dataset.run = run;
    this.node.dataset.step = String(step);
    if (!hasExamples) {
      this.say(`${tag} has no dataset examples in ${run} (log them with Writer.activation(..., inputs=x)).`);
      return;
    }
    const shown = filters.slice(0, MAX_STRIP_ROWS);
    let answer;
    try {
      answer = await api.examples(run, tag, step, { rows: [...shown].sort((a, b) => a - b) });
    } catch (e) {
      if (seq === this.seq) this.say(e.status === 404 ? `No dataset examples at step ${step}: ${e.message}` : `Dataset examples: ${e.message}`);
      return;
    }
    if (seq !== this.seq) return;
    this.draw(answer, shown, filters.length);
  }

  say(text) {
    this.node.dataset.state = "message";
    this.title.textContent = text;
    this.list.replaceChildren();
  }

  draw(answer, shown, total) {
    const p = prepared(answer);
    this.node.dataset.state = "drawn";
    const more = total > shown.length ? ` (the first ${shown.length} of ${total} filters)` : "";
    this.title.textContent = `Dataset examples at step ${answer.step}: the ${answer.k} of ${answer.ranked} probe inputs each filter responds to most${more}`
      + (p.images ? "" : "; no probe inputs were stored, so no crops");
    const rowOf = new Map(answer.rows.map((r, i) => [r, i]));
    setChildren(this.list, shown.map((f) => {
      const r = rowOf.get(f);
      if (r === undefined) return null;
      const label = el("span", { class: "examples-label" }, `${answer.channels[r]}`);
      if (!p.images) return el("div", { class: "examples-row", dataset: { filter: String(f) } }, label, answer.indices[r].map((i) => `#${i} `).join(""));
      const first = p.crop(r, 0);
      const scale = scaleFor(first.height, first.width, CROP_PX);
      const tw = first.width * scale;
      const th = first.height * scale;
      const canvas = el("canvas", {
        class: "examples-strip",
        width: answer.k * (tw + GAP) - GAP,
        height: th,
        dataset: { filter: String(f), scale: String(scale), tile: String(tw), gap: String(GAP) },
        title: answer.indices[r].map((i, j) => `#${i}: ${fmt(answer.values[r][j])}`).join("\n"),
      });
      const ctx = canvas.getContext("2d");
      for (let j = 0; j < answer.k; j++) blit(ctx, j ? p.crop(r, j) : first, j * (tw + GAP), 0, scale);
      return el("div", { class: "examples-row", dataset: { filter: String(f) } }, label, canvas);
    }));
  }
}

/**
 * One filter's examples on their whole inputs: the receptive-field box outlined, or
 * (field unknown) the example's map laid over in red; with each one's input index and
 * value. `show(run, tag, step, filter)`; `close()`.
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

  async show(run, tag, step, filter) {
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
    this.title.textContent = `Dataset examples of ${answer.channels[0]} at step ${answer.step}`;
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
