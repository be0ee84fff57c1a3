// The Dynamics view (issue 29), beside the grids: for the shown kernel, a filter x interval
// raster of update ratios (log scale, the 1e-3 band on its colour bar) with the doctor's
// findings drawn where they began, the gradient norms where logged, and the run's layer x
// step rotation. A click on a cell shows that step (and filter) in the grid. Data from the
// `dynamics`, `rotation` and `findings` routes; pixels from dynraster.js.

import * as api from "./api.js";
import { decodeBinary } from "./binary.js";
import { lut } from "./colormap.js";
import { el, fmt, paintPixels, setChildren } from "./dom.js";
import { chip } from "./doctorview.js";
import {
  BAND_H, cellGeometry, cellHit, colorbarPixels, decade, entryColor, gradIndex, gradLimits, markerCells,
  MISSING, RATIO_BAND, RATIO_LOG10, rasterPixels, ratioIndex, ROTATION_RANGE, rotationIndex, rowSources,
} from "./dynraster.js";
import { PROBLEM_STYLE, seriesFindings } from "./findings.js";

const CACHE = 8;
const BAR_W = 256;
const BAR_H = 14;
const ROTATION_ROW = 14;
/** Height (px) a raster fits its rows in (each at least 1 px: 512 filters take 512). */
const RASTER_H = 300;

function remember(map, key, make) {
  if (!map.has(key)) {
    const p = make();
    p.catch(() => map.delete(key));
    map.set(key, p);
    if (map.size > CACHE) map.delete(map.keys().next().value);
  }
  return map.get(key);
}

function geometryData(g) {
  return { rows: String(g.rows), cols: String(g.cols), cw: String(g.cw), ch: String(g.ch), left: String(g.left), top: String(g.top) };
}

/** A colour bar canvas with its labels (decades of a log scale, or a linear range). */
function colorbar(id, table, labels, marked = null) {
  const canvas = el("canvas", { class: "dynamics-bar", id });
  paintPixels(canvas, colorbarPixels(table, BAR_W, BAR_H + (marked ? BAND_H : 0), marked || {}));
  return el("div", { class: "dynamics-bar-wrap" }, canvas,
    el("div", { class: "dynamics-bar-labels", style: { width: `${BAR_W}px` } }, ...labels.map((t) => el("span", {}, t))));
}

/**
 * Reads from the Dashboard (app.js): state (run, tag, step), info(run, tag), tags, steps,
 * panels (the first one's row order), dark, and triage (findingsEntry, openAt).
 */
export class DynamicsView {
  constructor(dashboard) {
    this.dashboard = dashboard;
    this.status = el("div", { class: "dynamics-status dim", id: "dynamics-status", role: "status" });
    this.ratio = el("canvas", { class: "dynamics-raster", id: "dynamics-ratio" });
    this.grad = el("canvas", { class: "dynamics-raster", id: "dynamics-grad" });
    this.rotation = el("canvas", { class: "dynamics-raster", id: "dynamics-rotation" });
    this.ratioPart = el("div", { class: "dynamics-part", id: "dynamics-ratio-part" });
    this.gradPart = el("div", { class: "dynamics-part", id: "dynamics-grad-part" });
    this.rotationPart = el("div", { class: "dynamics-part", id: "dynamics-rotation-part" });
    this.node = el("details", { class: "dynamics", id: "dynamics", ontoggle: () => this.update() },
      el("summary", {}, "Dynamics (update ratio, rotation)"), this.status, this.ratioPart, this.gradPart, this.rotationPart);
    this.answers = new Map();
    this.rotations = new Map();
    this.seq = 0;
    this.shown = null; // {run, tag, answer, sources, marks, ratios, grads, gradLimits}
    this.shownRotation = null;
    for (const [canvas, hover, click] of [
      [this.ratio, (h) => this.hoverRatio(h), (h) => this.clickRatio(h)],
      [this.grad, (h) => this.hoverGrad(h), (h) => this.clickGrad(h)],
      [this.rotation, (h) => this.hoverRotation(h), (h) => this.clickRotation(h)],
    ]) {
      const hit = (e) => canvas.geometry && cellHit(canvas.geometry, e.offsetX, e.offsetY);
      canvas.addEventListener("mousemove", (e) => { const h = hit(e); canvas.title = h ? hover(h) : ""; });
      canvas.addEventListener("click", (e) => { const h = hit(e); if (h) click(h); });
    }
  }

  clear() {
    this.answers.clear();
    this.rotations.clear();
  }

  /** Redraws for the shown run, tag and step when open. */
  async update() {
    if (!this.node.open) return;
    const d = this.dashboard;
    const { run, tag } = d.state;
    const seq = ++this.seq;
    const kernel = d.info(run, tag).kind === "kernel";
    const last = d.steps[d.steps.length - 1];
    const tags = d.tags[run] ? Object.keys(d.tags[run]).length : 0;
    this.status.textContent = "computing…";
    const [one, rot] = await Promise.allSettled([
      kernel ? remember(this.answers, `${run}\0${tag}\0${d.steps.length}\0${last}`, () => api.dynamics(run, tag)) : null,
      remember(this.rotations, `${run}\0${tags}\0${d.steps.length}\0${last}`, () => api.rotation(run)),
    ]);
    if (seq !== this.seq) return;
    const problems = [];
    if (!kernel) {
      this.ratioPart.replaceChildren();
      this.gradPart.replaceChildren();
      problems.push("Update ratios and gradient norms are of kernels: pick a kernel tag.");
    } else if (one.status === "rejected") {
      this.ratioPart.replaceChildren();
      this.gradPart.replaceChildren();
      problems.push(`Dynamics of ${tag}: ${one.reason.message}`);
    } else {
      this.showRatios(run, tag, one.value, []);
      this.showGrads();
    }
    if (rot.status === "rejected") {
      this.rotationPart.replaceChildren();
      problems.push(`Rotation of ${run}: ${rot.reason.message}`);
    } else {
      this.showRotation(run, rot.value);
    }
    this.status.textContent = problems.join(" ");
    if (kernel && one.status === "fulfilled") {
      const entry = d.triage.findingsEntry(run);
      await entry.promise;
      if (seq !== this.seq || !entry.report) return;
      this.showRatios(run, tag, one.value, seriesFindings(entry.report.findings, run, tag));
    }
  }

  /** The update-ratio raster of `answer`, rows in the first panel's order, `findings` marked. */
  showRatios(run, tag, answer, findings) {
    const d = this.dashboard;
    const ratios = decodeBinary(answer.update_ratio);
    const [cols, n] = ratios.shape.length === 2 ? ratios.shape : [0, answer.filters.length];
    const panel = d.panels[0];
    const loaded = panel && panel.run === run && panel.loaded && panel.loaded.grid.kind === "kernel" ? panel.loaded : null;
    const sources = rowSources(n, loaded && panel.view.view.rowOrder,
      loaded && loaded.tensor.match ? loaded.tensor.match.permutation : null);
    const steps = answer.steps;
    const marks = markerCells(findings, answer.filters, sources, steps, cols);
    const grads = answer.grad_norm ? decodeBinary(answer.grad_norm).array : null;
    this.shown = { run, tag, answer, sources, marks, ratios: ratios.array, n, grads, gradLimits: grads ? gradLimits(grads) : null };
    const table = lut("sequential", { dark: d.dark });
    const g = cellGeometry(n, cols, { maxHeight: RASTER_H, maxW: 16, maxH: 10 });
    this.ratio.geometry = g;
    const shown = steps.indexOf(d.state.step);
    paintPixels(this.ratio, rasterPixels(g, (row, col) => entryColor(ratioIndex(ratios.array[col * n + sources[row]]), table),
      { shown, marks: marks.map((m) => ({ ...m, color: PROBLEM_STYLE[m.problem].color })) }));
    Object.assign(this.ratio.dataset, geometryData(g), {
      run, tag, step: String(d.state.step), shown: String(shown), steps: JSON.stringify(steps),
      filters: JSON.stringify(sources.map((s) => answer.filters[s])), marks: JSON.stringify(marks),
    });
    const [lo, hi] = RATIO_LOG10;
    const labels = [];
    for (let l = lo; l <= hi; l++) labels.push(decade(l));
    const perUpdate = answer.intervals.some((v) => v !== null);
    setChildren(this.ratioPart,
      el("div", { class: "dynamics-title" }, `${tag}: update ratio ||W[b] − W[a]|| / ||W[a]|| of each filter (rows, in the grid's order) `
        + `over each logged interval a → b (columns, ${cols} of them). Click a cell to show step a with that filter.`),
      cols ? this.ratio : el("div", { class: "dim" }, "One logged step: no interval yet."),
      colorbar("dynamics-ratio-bar", table, labels, { range: RATIO_LOG10, band: RATIO_BAND }),
      el("div", { class: "dynamics-note dim" }, `log10 of the ratio, clipped to ${decade(lo)}..${decade(hi)}; magenta: NaN/Inf (a filter all zeros). `
        + "The mark under the bar is the rule of thumb, about 1e-3 per optimizer update (1e-3.5..1e-2.5); a logged interval spans "
        + (perUpdate ? "the updates the hover states, so its ratio is larger." : "many updates, so its ratio is larger.")),
      marks.length
        ? el("div", { class: "dynamics-markers", id: "dynamics-markers" }, "Doctor: ",
          ...marks.map((m) => el("span", { class: "dynamics-marker", dataset: { problem: m.problem, filter: String(m.filter), step: String(m.step) } },
            chip(m.problem), ` filter ${m.filter} from step ${m.step} `)))
        : null);
  }

  showGrads() {
    const { run, tag, answer, sources, grads, n, gradLimits: limits } = this.shown;
    if (!grads) {
      setChildren(this.gradPart, el("div", { class: "dynamics-note dim", id: "dynamics-grad-note" },
        "No gradient norms logged for this kernel: log them with tb_convfilters.torch.log_kernels(writer, model, step, grads=True) "
        + "after loss.backward(), or Lightning's FiltersCallback(grads=True)."));
      return;
    }
    const d = this.dashboard;
    const table = lut("sequential", { dark: d.dark });
    const steps = answer.steps;
    const g = cellGeometry(n, steps.length, { maxHeight: RASTER_H, maxW: 16, maxH: 10 });
    this.grad.geometry = g;
    paintPixels(this.grad, rasterPixels(g, (row, col) => entryColor(gradIndex(grads[col * n + sources[row]], limits), table, MISSING),
      { shown: steps.indexOf(d.state.step) }));
    Object.assign(this.grad.dataset, geometryData(g), { run, tag, limits: JSON.stringify(limits) });
    const labels = limits ? [fmt(10 ** limits[0], 3), fmt(10 ** ((limits[0] + limits[1]) / 2), 3), fmt(10 ** limits[1], 3)] : [];
    setChildren(this.gradPart,
      el("div", { class: "dynamics-title" }, `${tag}: gradient norm of each filter (rows, same order) at each logged step (columns).`),
      this.grad, colorbar("dynamics-grad-bar", table, labels),
      el("div", { class: "dynamics-note dim" }, "log10 of the norm between the layer's smallest and largest; grey: a step logged without gradients."));
  }

  showRotation(run, answer) {
    const d = this.dashboard;
    const table = lut("sequential", { dark: d.dark });
    const values = decodeBinary(answer.rotation).array;
    const { tags, steps } = answer;
    const g = cellGeometry(tags.length, steps.length, { maxWidth: 380, minW: 2, maxW: 16, minH: ROTATION_ROW, maxH: ROTATION_ROW, left: 0 });
    this.rotation.geometry = g;
    this.shownRotation = { run, answer, values };
    paintPixels(this.rotation, rasterPixels(g, (row, col) => entryColor(rotationIndex(values[row * steps.length + col]), table, MISSING),
      { shown: steps.indexOf(d.state.step) }));
    Object.assign(this.rotation.dataset, geometryData(g), { run, tags: JSON.stringify(tags), steps: JSON.stringify(steps) });
    const [lo, hi] = ROTATION_RANGE;
    setChildren(this.rotationPart,
      el("div", { class: "dynamics-title" }, `Rotation of each layer of ${run} from its first logged step (1 − cos), a column per step. Click a cell to show that layer there.`),
      el("div", { class: "dynamics-rotation-wrap" },
        el("div", { class: "dynamics-layers", style: { paddingTop: `${g.top}px` } },
          ...tags.map((t) => el("div", { class: "dynamics-layer", style: { height: `${g.ch}px` }, title: t }, t))),
        tags.length ? this.rotation : el("div", { class: "dim" }, "No kernels in this run.")),
      colorbar("dynamics-rotation-bar", table, [String(lo), String((lo + hi) / 2), `${hi} and above`]),
      el("div", { class: "dynamics-note dim" }, `linear from ${lo} (no rotation) to ${hi} (orthogonal); grey: not logged at that step, or all zeros.`));
  }

  interval(col) {
    const { answer } = this.shown;
    const n = answer.intervals[col];
    return `step ${answer.steps[col]} → ${answer.steps[col + 1]}${n === null || n === undefined ? "" : ` (${n} optimizer updates)`}`;
  }

  hoverRatio({ row, col }) {
    const { answer, sources, ratios, n, marks } = this.shown;
    const v = ratios[col * n + sources[row]];
    const per = answer.intervals[col] ? `, ≈ ${fmt(v / answer.intervals[col])} per update` : "";
    const here = marks.filter((m) => m.row === row && m.col === col).map((m) => ` · ${m.problem} from here`).join("");
    return `filter ${answer.filters[sources[row]]}, ${this.interval(col)}: update ratio ${fmt(v)}${per}${here}`;
  }

  hoverGrad({ row, col }) {
    const { answer, sources, grads, n } = this.shown;
    const v = grads[col * n + sources[row]];
    return `filter ${answer.filters[sources[row]]}, step ${answer.steps[col]}: gradient norm ${Number.isNaN(v) ? "not logged" : fmt(v)}`;
  }

  hoverRotation({ row, col }) {
    const { answer, values } = this.shownRotation;
    const v = values[row * answer.steps.length + col];
    return `${answer.tags[row]}, step ${answer.steps[col]}: rotation ${Number.isNaN(v) ? "— (not logged, or all zeros)" : fmt(v)}`;
  }

  clickRatio({ row, col }) {
    const { run, tag, answer, sources } = this.shown;
    this.dashboard.triage.openAt(run, tag, answer.steps[col], answer.filters[sources[row]]);
  }

  clickGrad({ row, col }) {
    const { run, tag, answer, sources } = this.shown;
    this.dashboard.triage.openAt(run, tag, answer.steps[col], answer.filters[sources[row]]);
  }

  clickRotation({ row, col }) {
    const { run, answer, values } = this.shownRotation;
    if (Number.isNaN(values[row * answer.steps.length + col])) {
      this.status.textContent = `${answer.tags[row]} has no rotation at step ${answer.steps[col]} (not logged there, or all zeros).`;
      return;
    }
    this.dashboard.triage.openAt(run, answer.tags[row], answer.steps[col], null);
  }
}
