// Hovering an image of a pattern/projection grid: the kernel tile and the
// health statistics of the filter it shows, when the same layer's kernel
// ("<prefix>/kernel" or "<prefix>/weight") was logged in that run.

import * as api from "./api.js";
import { lut } from "./colormap.js";
import { kernelTagsFor } from "./detail.js";
import { el, fmt } from "./dom.js";
import { describeFinding, labelIndex, seriesFindings } from "./findings.js";
import { renderStatic } from "./gridcanvas.js";
import { canonicalize, filterCells, subGrid } from "./layout.js";
import { cellLimits } from "./normalize.js";
import { chip } from "./doctorview.js";

const CARD_PX = 150;
const STAT_COLUMNS = [["norm", "norm"], ["mean", "mean"], ["std", "std"], ["zero_frac", "≈0"], ["nonfinite", "NaN"]];

/** The logged step of `steps` (ascending) to pair with `step`: itself, else the latest before, else the first. */
export function pairedStep(steps, step) {
  let best = null;
  for (const s of steps) {
    if (s <= step) best = s;
    else break;
  }
  return best === null ? steps[0] : best;
}

/** Reads from the Dashboard (app.js): state, tags, dark, cache, loader.stats and triage.findingsReport. */
export class PatternHover {
  constructor(dashboard) {
    this.dashboard = dashboard;
    this.kernels = new Map(); // [run, kernel tag, step] -> {ready, error, ...}
    this.cards = new Map(); // [run, kernel tag, step, label] -> card node (reused while hovering)
  }

  clear() {
    this.kernels.clear();
    this.cards.clear();
  }

  /** Tooltip nodes for hit `hit` on `panel`'s image grid (or null for other grids). */
  nodes(panel, hit, view) {
    const d = this.dashboard;
    const loaded = panel.loaded;
    if (!loaded) return null;
    const { grid } = loaded;
    const label = grid.filterLabel(grid.filterOf(hit.r, hit.c));
    const tag = d.state.tag;
    const ktag = kernelTagsFor(d.tags, panel.run, tag)[0];
    if (!ktag) {
      const prefix = tag.slice(0, tag.lastIndexOf("/") + 1);
      return [el("div", { class: "hover-card dim" }, `No kernel logged for this layer (looked for ${prefix}kernel or …/weight).`)];
    }
    const entry = this.kernel(panel.run, ktag, Number(loaded.tensor.step), view);
    if (entry.error) return [el("div", { class: "hover-card dim" }, `${ktag}: ${entry.error}`)];
    if (!entry.ready) return [el("div", { class: "hover-card dim" }, `${ktag}: loading…`)];
    const key = JSON.stringify([panel.run, ktag, entry.step, label, d.dark, d.state.pct]);
    if (!this.cards.has(key)) {
      if (this.cards.size > 64) this.cards.clear();
      this.cards.set(key, this.card(panel.run, ktag, entry, label, Number(loaded.tensor.step)));
    }
    return [this.cards.get(key)];
  }

  /** The kernel (tensor, grid, stats) paired with a pattern step; loads it once, then re-hovers. */
  kernel(run, ktag, step, view) {
    const d = this.dashboard;
    const want = JSON.stringify([run, ktag, step]);
    if (this.kernels.has(want)) return this.kernels.get(want);
    const entry = { ready: false, error: null };
    this.kernels.set(want, entry);
    (async () => {
      try {
        const steps = (await api.steps(run, ktag)).map((x) => x.step);
        if (!steps.length) throw new Error("no steps logged");
        entry.step = pairedStep(steps, step);
        const [tensor, stats] = await Promise.all([
          d.cache.get(run, ktag, entry.step),
          d.loader.stats(run, ktag, entry.step).catch(() => null),
        ]);
        entry.tensor = tensor;
        entry.grid = canonicalize(tensor.header);
        entry.index = labelIndex(entry.grid);
        entry.stats = stats;
        entry.ready = true;
      } catch (e) {
        entry.error = e.message;
      }
      view.rehover();
    })();
    return entry;
  }

  card(run, ktag, entry, label, patternStep) {
    const d = this.dashboard;
    const where = entry.step === patternStep ? `step ${entry.step}` : `step ${entry.step} (the kernel's nearest logged step at or before ${patternStep})`;
    const f = entry.index.get(label);
    if (f === undefined) {
      return el("div", { class: "hover-card dim" }, `${ktag} at ${where} has no filter ${label} (not among the logged filters).`);
    }
    const { grid, tensor } = entry;
    const cells = [];
    const [start, end] = filterCells(grid, f);
    for (let c = start; c < Math.min(end, grid.cells); c++) cells.push(c);
    const sub = subGrid(grid, cells);
    const limits = cellLimits(grid, tensor.array, { mode: "layer", p: d.state.pct, signed: true });
    const lo = new Float32Array(cells.length);
    const hi = new Float32Array(cells.length);
    cells.forEach((cell, i) => { lo[i] = limits.lo[cell]; hi[i] = limits.hi[cell]; });
    const dpr = window.devicePixelRatio || 1;
    const zoom = Math.max(1, Math.min(24, Math.floor((CARD_PX * dpr) / Math.max(sub.cols * (sub.tw + 1), sub.rows * (sub.th + 1)))));
    const canvas = el("canvas", { class: "hover-kernel", dataset: { filter: label } });
    renderStatic(canvas, {
      grid: sub,
      values: tensor.array,
      limits: { lo, hi, nonfinite: new Uint32Array(cells.length), range: limits.range },
      table: lut("diverging", { dark: d.dark }),
      run,
      tag: ktag,
      step: String(tensor.step),
    }, zoom, d.dark ? [32, 33, 36] : [255, 255, 255], d.dark ? [72, 74, 78] : [200, 200, 200]);
    const lines = [el("div", { class: "hover-kernel-title" }, `${ktag}, filter ${label} at ${where}`), canvas];
    const at = entry.stats && entry.stats.steps.find((s) => s.step === entry.step);
    if (at && at.values && at.values[f]) {
      const names = entry.stats.names;
      const stats = el("div", { class: "hover-stats" }, ...STAT_COLUMNS.filter(([k]) => names.includes(k)).map(([k, text]) =>
        el("span", { dataset: { stat: k, value: String(at.values[f][names.indexOf(k)]) } }, `${text} ${fmt(at.values[f][names.indexOf(k)], 4)}`)));
      lines.push(stats);
    } else {
      lines.push(el("div", { class: "dim" }, "no statistics for this step"));
    }
    const report = d.triage.findingsReport(run);
    if (report) {
      for (const finding of seriesFindings(report.findings, run, ktag)) {
        if (finding.filter !== null && String(finding.filter) !== label) continue;
        lines.push(el("div", { class: "hover-finding" }, chip(finding.problem), " ", describeFinding(finding)));
      }
    }
    return el("div", { class: "hover-card", dataset: { run, tag: ktag, step: String(entry.step), filter: label } }, ...lines);
  }
}
