// The Similarity view: heatmaps of linear CKA per layer over steps (how early each
// layer settles) and between the compared runs, on a fixed 0..1 colour scale, with
// the value on hover. Data from the `similarity` route; the math is in cka.js.

import * as api from "./api.js";
import { activationTag, ckaColor, layerRows, pickSteps, stepsPerRun } from "./cka.js";
import { el, fmt, setChildren } from "./dom.js";
import { unionSteps } from "./state.js";

/** Reads from the Dashboard (app.js): shownRuns(), tags and steps. */
export class SimilarityView {
  constructor(dashboard) {
    this.dashboard = dashboard;
    this.body = el("div", { class: "similarity-body", id: "similarity-body" });
    this.status = el("div", { class: "similarity-status dim", id: "similarity-status", role: "status" });
    this.node = el("details", { class: "similarity", id: "similarity", ontoggle: () => this.update() },
      el("summary", {}, "Similarity (CKA)"), this.status, this.body);
    this.seq = 0;
    this.key = null;
  }

  /** Recomputes the heatmaps when open and the runs or layers changed. */
  async update() {
    if (!this.node.open) return;
    const d = this.dashboard;
    const runs = d.shownRuns();
    const run = runs[0];
    const tags = run && d.tags[run] ? d.tags[run] : {};
    const layers = Object.keys(tags).sort().filter((t) => activationTag(t, tags) === t);
    const key = JSON.stringify([runs, layers, runs.map((r) => (d.tags[r] ? Object.keys(d.tags[r]).length : 0)), d.steps.length]);
    if (key === this.key) return;
    this.key = key;
    const seq = ++this.seq;
    if (!layers.length) {
      this.status.textContent = "CKA compares activations: log them (sample_inputs in Keras, log_activations in PyTorch) to see how alike layers are.";
      this.body.replaceChildren();
      return;
    }
    this.status.textContent = "computing…";
    const rows = [];
    let steps = [];
    const notes = [];
    for (const tag of layers) {
      const have = runs.filter((r) => d.tags[r] && d.tags[r][tag]);
      try {
        const lists = await Promise.all(have.map((r) => api.steps(r, tag)));
        const layerSteps = pickSteps(unionSteps(lists.map((l) => l.map((x) => x.step))), stepsPerRun(have.length));
        const answer = await api.similarity(tag, have, layerSteps);
        if (answer.note) notes.push(`${tag}: ${answer.note}`);
        steps = unionSteps([steps, layerSteps]);
        rows.push({ tag, answer, have });
      } catch (e) {
        rows.push({ tag, error: e.message });
      }
      if (seq !== this.seq) return;
    }
    const others = runs.slice(1);
    const tables = [this.table(`How each layer settles in ${run}: CKA with its last step`, steps, rows,
      (r) => layerRows(r.answer, run, others, steps).settle)];
    for (const other of others) {
      tables.push(this.table(`${run} vs ${other} at each step`, steps, rows,
        (r) => (r.have.includes(other) ? layerRows(r.answer, run, [other], steps).between[other] : null)));
    }
    this.status.textContent = notes.join(" ") || (others.length ? "" : "Compare runs to see CKA between them.");
    setChildren(this.body, ...tables, this.legend());
  }

  /** One heatmap: a row per layer, a column per step. */
  table(title, steps, rows, valuesOf) {
    const head = el("tr", {}, el("th", {}, "layer \\ step"), ...steps.map((s) => el("th", {}, String(s))));
    const body = rows.map((r) => {
      if (r.error) return el("tr", {}, el("th", {}, r.tag), el("td", { colspan: String(steps.length), class: "similarity-error" }, r.error));
      const values = valuesOf(r);
      if (!values) return el("tr", {}, el("th", {}, r.tag), el("td", { colspan: String(steps.length), class: "dim" }, "not logged by both runs"));
      return el("tr", {}, el("th", {}, r.tag), ...values.map((v, i) => el("td", {
        class: "cka-cell",
        title: `${r.tag}, step ${steps[i]}: CKA ${v === null ? "— (not logged)" : fmt(v, 4)}`,
        dataset: { value: v === null ? "" : String(v), step: String(steps[i]), tag: r.tag },
        style: { backgroundColor: ckaColor(v) },
      })));
    });
    return el("div", { class: "similarity-table-wrap" }, el("div", { class: "similarity-title" }, title),
      el("table", { class: "similarity-table" }, el("thead", {}, head), el("tbody", {}, ...body)));
  }

  legend() {
    const stops = [0, 0.25, 0.5, 0.75, 1];
    return el("div", { class: "similarity-legend" }, "CKA ",
      ...stops.map((v) => el("span", { class: "cka-swatch", style: { backgroundColor: ckaColor(v) }, title: String(v) }, String(v))),
      el("span", { class: "dim" }, " (fixed 0..1 scale; grey: not logged)"));
  }
}
