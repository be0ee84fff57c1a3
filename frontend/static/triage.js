// The filter doctor in the dashboard: each shown run's findings fetched once,
// shown as badges, banners, the findings list and the health table's flags
// (or flags computed here when the route failed), and jumps to a finding; the
// health table itself (the first panel's statistics at the step).

import { rowCosines, rowNote } from "./align.js";
import { healthFlags, nearDuplicates } from "./analysis.js";
import * as api from "./api.js";
import { mark } from "./marks.js";
import { fmt } from "./dom.js";
import { badgesFor, describeFinding, findingFilter, findingsByFilter, PROBLEMS, seriesFindings, stepAtOrAfter } from "./findings.js";
import { filterCells, filterCount, IMAGE_KINDS } from "./layout.js";

/**
 * Composed by the Dashboard (app.js) as `dashboard.triage`. Its interface,
 * `host`: state() -> the URL state (jumpTo sets run, tag, step, sel, sample,
 * zoom); panels() -> the shown Panels; token() -> the number of the latest
 * showStep (answers for older ones are dropped); info(run, tag); stats(run, tag, step)
 * -> promise of the tag's statistics; drift(run, step, loaded) -> promise of the shown
 * kernel's drift per filter or null; select(f, reveal) (Selection);
 * stopPlaying(); showState() -> promise (controls, panels and step redone from
 * the state); the views health (HealthTable), detail (DetailView) and doctor
 * (DoctorView). Holds each run's findings until clearFindings().
 */
export class Triage {
  constructor(host) {
    this.host = host;
    this.findingsCache = new Map();
    this.healthBase = null;
  }

  /** Forgets the findings (new data or Reload). */
  clearFindings() {
    this.findingsCache.clear();
  }

  /** The cache entry of a run's findings: {promise, report, error}; fetched once per run. */
  findingsEntry(run) {
    if (!this.findingsCache.has(run)) {
      const entry = { report: null, error: null };
      entry.promise = api.findings(run).then(
        (r) => { entry.report = r; },
        (e) => { entry.error = e.message; },
      );
      this.findingsCache.set(run, entry);
    }
    return this.findingsCache.get(run);
  }

  /** A run's findings report if it has arrived, else null. */
  findingsReport(run) {
    const e = this.findingsCache.get(run);
    return e ? e.report : null;
  }

  /** Fetches the findings of the shown runs and shows them (badges, banners, list, health flags). */
  async updateFindings() {
    const entries = this.host.panels().map((p) => this.findingsEntry(p.run));
    this.applyFindings(false);
    if (entries.every((e) => e.report || e.error)) return;
    await Promise.all(entries.map((e) => e.promise));
    this.applyFindings(true);
    mark("findings", { tag: this.host.state().tag });
  }

  /** Shows the findings at hand; `arrived`: some just came in (the detail view lists them too). */
  applyFindings(arrived) {
    const h = this.host;
    const s = h.state();
    h.doctor.update(h.panels().map((p) => {
      const e = this.findingsCache.get(p.run) || {};
      return { run: p.run, report: e.report || null, error: e.error || null };
    }), { run: s.run, tag: s.tag });
    for (const p of h.panels()) this.markPanel(p);
    this.applyHealthFlags();
    if (arrived && h.detail.open) h.detail.refresh();
  }

  /** The health table from the first panel's tag and step (its flags: applyHealthFlags). */
  async updateSide() {
    const h = this.host;
    const s = h.state();
    const first = h.panels()[0];
    this.healthBase = null;
    if (!first || !first.loaded) {
      h.health.update(null);
      return;
    }
    const { grid } = first.loaded;
    if (IMAGE_KINDS.includes(grid.kind)) {
      h.health.update({ message: `${grid.kind === "pattern" ? "Patterns" : "Projections"} have no per-filter statistics: `
        + "hover an image for its filter's kernel and statistics." });
      if (h.detail.open) h.detail.refresh();
      return;
    }
    const token = h.token();
    let stats;
    let drift;
    try {
      // the drift needs the first step's tensor: fetched after the grid is drawn, beside the statistics
      [stats, drift] = await Promise.all([h.stats(first.run, s.tag, s.step), h.drift(first.run, s.step, first.loaded)]);
    } catch (e) {
      h.health.update({ message: `Statistics unavailable: ${e.message}` });
      return;
    }
    if (token !== h.token()) return;
    const data = {
      stats,
      kind: grid.kind,
      tag: s.tag,
      step: s.step,
      drift: drift || null,
      label: (f) => grid.filterLabel(f),
    };
    this.healthBase = { token, data, run: first.run, loaded: first.loaded };
    h.health.selected = s.sel;
    this.applyHealthFlags();
    if (h.detail.open) h.detail.refresh();
  }

  /** Badges on the panel's flagged tiles, its frozen banner and legend; labels on images. */
  markPanel(panel) {
    const loaded = panel.loaded;
    if (!loaded) return;
    const report = this.findingsReport(panel.run);
    const found = report ? seriesFindings(report.findings, panel.run, this.host.state().tag) : [];
    const badges = badgesFor(loaded.grid, found);
    const match = loaded.tensor.match; // an aligned run (comparing.js): each row's matched cosine
    const rowNotes = match ? rowCosines(match, loaded.grid.rows).map(rowNote) : null;
    panel.view.setMarks({ badges, labels: IMAGE_KINDS.includes(loaded.grid.kind), rowNotes });
    panel.setBanner(found.filter((f) => f.filter === null));
    panel.setLegend(PROBLEMS.filter((p) => badges.some((b) => b.problems.includes(p))));
  }

  /**
   * The health table's flags: the filter doctor's findings when its route
   * answered; only if it failed, per-step checks computed here from the
   * step's statistics (and tensor, for near-duplicates), labelled as such.
   */
  applyHealthFlags() {
    const h = this.healthBase;
    if (!h || h.token !== this.host.token()) return;
    const { data, loaded } = h;
    const n = filterCount(loaded.grid);
    const entry = this.findingsCache.get(h.run);
    const s = this.host.state();
    if (entry && entry.report) {
      const per = findingsByFilter(loaded.grid, seriesFindings(entry.report.findings, h.run, s.tag), n);
      const flags = per.map((list) => list.map((f) => ({
        problem: f.problem,
        title: describeFinding(f) + (s.step < f.first_step ? ` (not yet at step ${s.step})` : ""),
        later: s.step < f.first_step,
      })));
      this.host.health.update({ ...data, flags, flagNote: "Flags: the filter doctor's findings over the whole run "
        + "(a faded flag was first seen after this step). Click one in the Filter doctor list to jump to it." });
      return;
    }
    if (!entry || !entry.error) {
      this.host.health.update({ ...data, flags: null, flagNote: "" });
      return;
    }
    this.clientFlags(h, entry.error);
  }

  /** Fallback flags when the findings route failed: this step's statistics (and tensor) only. */
  clientFlags(h, error) {
    const { data, loaded } = h;
    const at = data.stats.steps.find((x) => x.step === data.step);
    const health = this.host.health;
    if (!at || !at.values) {
      health.update({ ...data, flags: [], flagNote: "" });
      return;
    }
    const label = data.label;
    const show = (duplicates) => {
      const flags = healthFlags(data.stats.names, at.values, data.kind, duplicates).map((list, f) => list.map((p) => ({
        problem: p,
        title: p === "duplicate"
          ? `cosine similarity ${fmt(duplicates.similarity[f], 4)} with filter ${label(duplicates.partner[f])} at this step`
          : `${p} at this step`,
      })));
      health.update({ ...data, flags, flagNote: `The filter doctor did not answer (${error}); these flags are `
        + `computed in the browser from step ${data.step} alone${duplicates || data.kind !== "kernel" ? "" : " (near-duplicate check pending)"}.` });
    };
    show(null);
    if (data.kind !== "kernel") return;
    // near-duplicates are O(filters^2): computed after the table is on screen
    setTimeout(() => {
      if (h !== this.healthBase || h.token !== this.host.token()) return;
      show(nearDuplicates(loaded.grid, loaded.tensor.array));
    }, 30);
  }

  /**
   * Shows a finding: its tag at its first step (or the nearest logged step
   * after it), its run, and its filter selected and opened; says which step.
   */
  async jumpTo(f) {
    const h = this.host;
    let steps;
    try {
      steps = (await api.steps(f.run, f.tag)).map((x) => x.step);
    } catch (e) {
      h.doctor.setNote(`Cannot open ${f.tag} of ${f.run}: ${e.message}`);
      return;
    }
    const at = stepAtOrAfter(steps, f.first_step);
    if (!at) {
      h.doctor.setNote(`${f.tag} of ${f.run} has no steps to show.`);
      return;
    }
    h.doctor.active = f;
    const idx = await this.openAt(f.run, f.tag, at.step, f.filter);
    const where = at.exact
      ? `step ${at.step}, where it was first seen`
      : at.after
        ? `step ${at.step}, the nearest logged step after step ${f.first_step} where it was first seen`
        : `step ${at.step}, the last logged step (none at or after step ${f.first_step}, where it was first seen)`;
    if (f.filter === null) {
      h.doctor.setNote(`${f.run} · ${f.tag}: the whole layer is ${f.problem}; showing ${where}.`);
      return;
    }
    if (idx < 0) {
      h.doctor.setNote(`${f.run} · ${f.tag} at ${where}: filter ${f.filter} is not drawn.`);
      return;
    }
    h.doctor.setNote(`${f.run} · ${f.tag} · filter ${f.filter} (${f.problem}) at ${where}.`);
  }

  /**
   * Shows `tag` of `run` at logged step `step` and, when `label` (a filter's original index)
   * is drawn, selects that filter and opens it in the detail view. Returns its grid index, or -1.
   */
  async openAt(run, tag, step, label) {
    const h = this.host;
    h.stopPlaying();
    const s = h.state();
    const shown = run === s.run || (s.compare.includes(run) && h.info(run, tag).kind);
    if (!shown) s.run = run;
    if (s.tag !== tag) Object.assign(s, { sample: 0, zoom: null });
    Object.assign(s, { tag, step, sel: null });
    h.detail.close();
    await h.showState();
    if (label === null || label === undefined) return -1;
    const panel = h.panels().find((p) => p.run === run);
    const idx = panel && panel.loaded ? findingFilter(panel.loaded.grid, { filter: label }) : -1;
    if (idx < 0) return -1;
    h.select(idx, false);
    for (const p of h.panels()) {
      if (p.loaded && idx < filterCount(p.loaded.grid)) p.view.reveal(Math.floor(filterCells(p.loaded.grid, idx)[0] / p.loaded.grid.cols));
    }
    h.detail.show(panel, idx);
    return idx;
  }
}
