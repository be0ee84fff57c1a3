// The Spectra view (issue 30): for the shown kernel layer, its filters' dominant frequency x
// orientation as a histogram at the slider's step, and the same over every step (a row per
// step), beside the grids; and each filter's badge in the detail view. Data from the
// `spectra` and `spectra_steps` routes; pixels from spectra.js.

import * as api from "./api.js";
import { lut } from "./colormap.js";
import { el, paintPixels, setChildren } from "./dom.js";
import {
  badgeText, bandLabel, binLabel, filterIndex, hasSpectra, histogramHit, histogramPixels,
  rasterHit, rasterPixels,
} from "./spectra.js";

const CACHE = 256;

/** Reads from the Dashboard (app.js): state (run, tag, step), info(run, tag) and dark. */
export class SpectraView {
  constructor(dashboard) {
    this.dashboard = dashboard;
    this.status = el("div", { class: "spectra-status dim", id: "spectra-status", role: "status" });
    this.hist = el("canvas", { class: "spectra-histogram", id: "spectra-histogram" });
    this.histTitle = el("div", { class: "spectra-title" });
    this.raster = el("canvas", { class: "spectra-raster", id: "spectra-raster" });
    this.rasterTitle = el("div", { class: "spectra-title" });
    this.bands = el("div", { class: "spectra-bands dim" });
    this.body = el("div", { class: "spectra-body", id: "spectra-body", hidden: true },
      this.histTitle, el("div", { class: "spectra-hist-wrap" }, this.hist), this.bands,
      this.rasterTitle, this.raster);
    this.node = el("details", { class: "spectra", id: "spectra", ontoggle: () => this.update() },
      el("summary", {}, "Spectra (orientation × frequency)"), this.status, this.body);
    this.answers = new Map(); // "run\0tag\0step" -> Promise of a spectra answer
    this.over = null; // {key, answer}
    this.seq = 0;
    this.hist.addEventListener("mousemove", (e) => this.hoverHist(e));
    this.raster.addEventListener("mousemove", (e) => this.hoverRaster(e));
  }

  clear() {
    this.answers.clear();
    this.over = null;
  }

  /** The spectra answer of (run, tag, step), fetched once. */
  spectraOf(run, tag, step) {
    const key = `${run}\0${tag}\0${step}`;
    if (!this.answers.has(key)) {
      const p = api.spectra(run, tag, step);
      p.catch(() => this.answers.delete(key));
      this.answers.set(key, p);
      if (this.answers.size > CACHE) this.answers.delete(this.answers.keys().next().value);
    }
    return this.answers.get(key);
  }

  /** The detail view's badge text for filter `label` of (run, tag, step), or null (not a 2-D kernel). */
  async badge(run, tag, step, label) {
    if (!hasSpectra(this.dashboard.info(run, tag))) return null;
    const answer = await this.spectraOf(run, tag, step);
    const i = filterIndex(answer, label);
    if (i < 0) return null;
    return { text: badgeText(answer.orientation[i], answer.frequency[i]), orientation: answer.orientation[i], frequency: answer.frequency[i] };
  }

  /** Redraws for the shown run, tag and step when open. */
  async update() {
    if (!this.node.open) return;
    const d = this.dashboard;
    const { run, tag, step } = d.state;
    const seq = ++this.seq;
    if (!hasSpectra(d.info(run, tag))) {
      this.status.textContent = "Spectra are of 2-D kernels: pick a kernel tag (Conv2D, nn.Conv2d, depthwise or transposed).";
      this.body.hidden = true;
      return;
    }
    if (step === null || step === undefined) return;
    this.status.textContent = "computing…";
    const overKey = `${run}\0${tag}\0${d.steps.length}\0${d.steps[d.steps.length - 1]}`;
    let one;
    let over;
    try {
      [one, over] = await Promise.all([
        this.spectraOf(run, tag, step),
        this.over && this.over.key === overKey ? this.over.answer : api.spectraSteps(run, tag),
      ]);
    } catch (e) {
      if (seq !== this.seq) return;
      this.status.textContent = `Spectra of ${tag}: ${e.message}`;
      this.body.hidden = true;
      return;
    }
    if (seq !== this.seq) return;
    this.over = { key: overKey, answer: over };
    this.show(run, tag, one, over);
  }

  show(run, tag, one, over) {
    const table = lut("sequential", { dark: this.dashboard.dark });
    const counts = one.counts;
    this.shown = { one, over };
    paintPixels(this.hist, histogramPixels(counts, table));
    Object.assign(this.hist.dataset, { run, tag, step: String(one.step), counts: JSON.stringify(counts) });
    const n = one.frequency.length;
    this.histTitle.textContent = `${tag} at step ${one.step}: ${n} filters by dominant frequency (rows, low at the bottom) × orientation (columns: `
      + `${one.orientation_edges.length - 1} bins from ${binLabel(one.orientation_edges, 0)}, varying along the width, to `
      + `${binLabel(one.orientation_edges, one.orientation_edges.length - 2)})`;
    const fe = one.frequency_edges;
    this.bands.textContent = `bands, bottom up (cycles/px): ${fe.slice(0, -1).map((_, b) => bandLabel(fe, b)).join(", ")}`
      + ` · flat (frequency 0): ${one.flat} · no power: ${one.undefined}`;
    const bands = fe.length - 1;
    const bins = one.orientation_edges.length - 1;
    const shown = over.steps.findIndex((s) => s.step === one.step);
    const img = rasterPixels(over.steps, bands, bins, table, shown);
    paintPixels(this.raster, img);
    Object.assign(this.raster.dataset, { steps: JSON.stringify(over.steps.map((s) => s.step)), shown: String(shown), most: String(img.most) });
    this.rasterTitle.textContent = `Coverage over ${over.steps.length} step${over.steps.length === 1 ? "" : "s"}`
      + `${over.capped ? ` (of ${over.total_steps}, spread evenly)` : ""}: a row per step, the bands left to right (low first), `
      + `${bins} orientations each; one colour scale (0 to ${img.most} filters); the marked row is the shown step.`;
    const failed = over.steps.filter((s) => s.error);
    this.status.textContent = failed.length ? `${failed.length} step(s) unreadable: ${failed[0].error}` : "";
    this.body.hidden = false;
  }

  hoverHist(e) {
    if (!this.shown) return;
    const { one } = this.shown;
    const bands = one.counts.length;
    const hit = histogramHit(e.offsetX, e.offsetY, bands, one.counts[0].length);
    this.hist.title = hit
      ? `${one.counts[hit.band][hit.bin]} filters: ${bandLabel(one.frequency_edges, hit.band)} cycles/px, ${binLabel(one.orientation_edges, hit.bin)}`
      : "";
  }

  hoverRaster(e) {
    if (!this.shown) return;
    const { one, over } = this.shown;
    const bands = one.counts.length;
    const bins = one.counts[0].length;
    const hit = rasterHit(e.offsetX, e.offsetY, over.steps.length, bands, bins);
    const s = hit && over.steps[hit.row];
    this.raster.title = !s ? "" : s.error ? `step ${s.step}: ${s.error}`
      : `step ${s.step}: ${s.counts[hit.band][hit.bin]} filters at ${bandLabel(one.frequency_edges, hit.band)} cycles/px, ${binLabel(one.orientation_edges, hit.bin)}`;
  }
}

/** The badge element of the detail view (filled by DetailView through SpectraView.badge). */
export function badgeNode() {
  return el("div", { class: "detail-spectrum", id: "detail-spectrum", hidden: true });
}

/** Fills `node` with filter `label`'s badge of (run, tag, step), or hides it; drops stale answers via `current()`. */
export async function fillBadge(node, view, run, tag, step, label, current) {
  let badge = null;
  try {
    badge = await view.badge(run, tag, step, label);
  } catch (e) {
    badge = { text: `spectrum: ${e.message}`, orientation: null, frequency: null };
  }
  if (!current()) return;
  node.hidden = !badge;
  if (!badge) return;
  setChildren(node, badge.text);
  node.dataset.orientation = String(badge.orientation);
  node.dataset.frequency = String(badge.frequency);
}
