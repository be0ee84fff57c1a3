// The detail view of one filter: its tiles drawn large with their values;
// for an activation channel, also the kernel slices of the same layer that
// produce it (tags "<layer>/kernel" or "<layer>/weight" of the same run).

import * as api from "./api.js";
import { lut } from "./colormap.js";
import { chip } from "./doctorview.js";
import { el, fmt, setChildren } from "./dom.js";
import { describeFinding, seriesFindings } from "./findings.js";
import { GridView } from "./gridview.js";
import { canonicalize, filterCells, subGrid } from "./layout.js";
import { cellLimits } from "./normalize.js";
import { badgeNode, fillBadge } from "./spectraview.js";

/** Kernel tags of `run` in the same layer as `tag` (same prefix before the last "/"). */
export function kernelTagsFor(tags, run, tag) {
  const cut = tag.lastIndexOf("/");
  const prefix = cut < 0 ? "" : tag.slice(0, cut + 1);
  const all = Object.entries(tags[run] || {})
    .filter(([t, info]) => info.kind === "kernel" && t.startsWith(prefix) && !t.slice(prefix.length).includes("/"))
    .map(([t]) => t);
  const rank = (t) => (t.endsWith("/kernel") ? 0 : t.endsWith("/weight") ? 1 : 2);
  return all.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

/** Limits of a sub-grid: the source grid's per-cell limits of its cells. */
function subLimits(limits, cells) {
  const lo = new Float32Array(cells.length);
  const hi = new Float32Array(cells.length);
  const nonfinite = new Uint32Array(cells.length);
  cells.forEach((cell, i) => {
    lo[i] = limits.lo[cell];
    hi[i] = limits.hi[cell];
    nonfinite[i] = limits.nonfinite[cell];
  });
  return { lo, hi, nonfinite, range: limits.range };
}

function range(a, b) {
  return Array.from({ length: b - a }, (_, i) => a + i);
}

/** Reads from the Dashboard (app.js): panels, state, tags, dark, cache and triage.findingsReport. */
export class DetailView {
  constructor(dashboard) {
    this.dashboard = dashboard;
    this.title = el("h3", { class: "detail-title" });
    this.info = el("div", { class: "detail-info" });
    this.findings = el("div", { class: "detail-findings", id: "detail-findings" });
    this.spectrum = badgeNode();
    this.view = new GridView({ className: "detail-grid", maxZoom: 48, maxTile: 400, showValues: true, maxHeight: () => 420 });
    this.kernelTitle = el("h4", { class: "detail-kernel-title" });
    this.kernelView = new GridView({ className: "detail-grid kernel-slices", maxZoom: 40, maxTile: 160, showValues: true, maxHeight: () => 360 });
    this.kernelBox = el("div", { class: "detail-kernel", hidden: true }, this.kernelTitle, this.kernelView.node);
    this.node = el("section", { class: "detail", id: "detail", hidden: true },
      el("header", { class: "detail-header" }, this.title,
        el("button", { type: "button", class: "close", title: "Close", onclick: () => this.close() }, "×")),
      this.info, this.spectrum, this.findings, this.view.node, this.kernelBox);
    this.open = false;
    this.target = null;
  }

  close() {
    this.open = false;
    this.target = null;
    this.node.hidden = true;
  }

  /** Shows filter `f` of `panel`'s current grid. */
  show(panel, f) {
    this.target = { run: panel.run, f };
    this.open = true;
    this.node.hidden = false;
    this.refresh();
    this.dashboard.showExampleDetail();
  }

  refresh() {
    const d = this.dashboard;
    if (!this.target) return;
    const panel = d.panels.find((p) => p.run === this.target.run) || d.panels[0];
    if (!panel || !panel.loaded) return;
    const { grid, values, limits, tensor, cmap } = panel.loaded;
    const f = this.target.f;
    const [start, end] = filterCells(grid, f);
    if (start >= grid.cells) {
      this.close();
      return;
    }
    const cells = range(start, Math.min(end, grid.cells));
    const sub = subGrid(grid, cells);
    const name = grid.kind === "activation" ? "channel" : "filter";
    this.title.textContent = `${name} ${grid.filterLabel(f)}`;
    const finite = [];
    for (const cell of cells) {
      const r = Math.floor(cell / grid.cols);
      const c = cell % grid.cols;
      for (let y = 0; y < grid.th; y++) {
        for (let x = 0; x < grid.tw; x++) {
          if (grid.xOff[x] < 0) continue;
          const v = values[grid.cellBase[r * grid.cols + c] + grid.yOff[y] + grid.xOff[x]];
          if (Number.isFinite(v)) finite.push(v);
        }
      }
    }
    const min = finite.length ? finite.reduce((a, b) => Math.min(a, b)) : NaN;
    const max = finite.length ? finite.reduce((a, b) => Math.max(a, b)) : NaN;
    const norm = Math.sqrt(finite.reduce((a, b) => a + b * b, 0));
    this.info.textContent = `${panel.run} · ${d.state.tag} · step ${tensor.step}`
      + ` · ${cells.length} tile${cells.length === 1 ? "" : "s"} of ${grid.th}×${grid.tw}`
      + ` · min ${fmt(min)} · max ${fmt(max)} · L2 ${fmt(norm)}`;
    const report = d.triage.findingsReport(panel.run);
    const label = grid.filterLabel(f);
    const found = report
      ? seriesFindings(report.findings, panel.run, d.state.tag).filter((x) => x.filter === null || String(x.filter) === label)
      : [];
    setChildren(this.findings, found.map((x) => el("div", { dataset: { problem: x.problem } }, chip(x.problem), " ", describeFinding(x))));
    this.view.bg = panel.view.bg;
    this.view.sep = panel.view.sep;
    this.view.fitted = false;
    this.view.set({
      grid: sub,
      values,
      limits: subLimits(limits, cells),
      table: lut(cmap, { dark: d.dark }),
      run: panel.run,
      tag: d.state.tag,
      step: String(tensor.step),
      mode: d.state.norm,
      viewName: "detail",
    });
    const target = this.target;
    if (grid.kind === "kernel") {
      fillBadge(this.spectrum, d.spectra, panel.run, d.state.tag, tensor.step, label, () => this.target === target);
    } else {
      this.spectrum.hidden = true;
    }
    if (grid.kind === "activation") this.showKernel(panel, grid, f);
    else this.kernelBox.hidden = true;
  }

  /** For activation channel `f`: the kernel filter of the same layer that produces it. */
  async showKernel(panel, grid, f) {
    const d = this.dashboard;
    const tag = d.state.tag;
    const step = panel.loaded.tensor.step;
    const candidates = kernelTagsFor(d.tags, panel.run, tag);
    this.kernelBox.hidden = false;
    const target = this.target;
    if (!candidates.length) {
      this.kernelTitle.textContent = `No kernel logged for this layer (looked for ${tag.slice(0, tag.lastIndexOf("/") + 1)}kernel or …/weight in ${panel.run}).`;
      this.kernelView.node.hidden = true;
      return;
    }
    const ktag = candidates[0];
    this.kernelTitle.textContent = `${ktag}: loading step ${step}…`;
    let kt;
    try {
      kt = await d.cache.get(panel.run, ktag, step);
    } catch (e) {
      if (this.target !== target) return;
      this.kernelTitle.textContent = `${ktag} at step ${step}: ${e.message}`;
      this.kernelView.node.hidden = true;
      return;
    }
    if (this.target !== target) return;
    const kgrid = canonicalize(kt.header);
    // channel f's original index -> the kernel's filter with that original index
    const channel = Number(grid.filterLabel(f));
    let kf = -1;
    for (let i = 0; i < kgrid.nFilters; i++) {
      if (Number(kgrid.filterLabel(i)) === channel) kf = i;
    }
    if (kf < 0 || !kgrid.rowFilters) {
      this.kernelTitle.textContent = `${ktag} at step ${step} has no filter ${channel}`
        + (kgrid.rowFilters ? " (it was not among the logged filters)" : " (depthwise kernel)");
      this.kernelView.node.hidden = true;
      return;
    }
    const klimits = cellLimits(kgrid, kt.array, { mode: "layer", p: d.state.pct, signed: true });
    const cells = range(...filterCells(kgrid, kf));
    this.kernelTitle.textContent = `${ktag}, filter ${channel} at step ${step}: the kernel slices (one per input channel) that produce this channel`;
    this.kernelView.node.hidden = false;
    this.kernelView.bg = this.view.bg;
    this.kernelView.sep = this.view.sep;
    this.kernelView.fitted = false;
    this.kernelView.set({
      grid: subGrid(kgrid, cells),
      values: kt.array,
      limits: subLimits(klimits, cells),
      table: lut("diverging", { dark: d.dark }),
      run: panel.run,
      tag: ktag,
      step: String(kt.step),
      mode: "layer",
      viewName: "kernel-of-activation",
    });
  }
}
