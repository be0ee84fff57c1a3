// The filter doctor's findings list: per run, grouped by tag, with a legend of
// the badge colours. Clicking an entry jumps to that tag, step and filter.

import { el, setChildren } from "./dom.js";
import { cssColor, describeFinding, groupFindings, PROBLEM_STYLE, PROBLEMS } from "./findings.js";

const PER_TAG = 20;

/** A coloured chip naming a problem (legend, list entries, banners). */
export function chip(problem, text = problem) {
  return el("span", {
    class: "chip",
    dataset: { problem },
    style: { background: cssColor(problem), color: cssColor(problem, "text") },
    title: `${problem}: ${PROBLEM_STYLE[problem] ? PROBLEM_STYLE[problem].help : ""}`,
  }, text);
}

/** The legend of badge colours (and the one-letter codes used on small tiles). */
export function legend(problems = PROBLEMS) {
  return el("div", { class: "badge-legend" },
    ...problems.map((p) => el("span", { class: "legend-item", dataset: { problem: p } },
      chip(p), el("span", { class: "dim" }, p === "frozen" ? "banner" : PROBLEM_STYLE[p].code))));
}

export class DoctorView {
  /** options.onJump(finding) */
  constructor(options = {}) {
    this.options = options;
    this.expanded = new Set();
    this.summary = el("div", { class: "findings-summary", id: "findings-summary" });
    this.note = el("div", { class: "findings-note", id: "findings-note", role: "status" });
    this.list = el("div", { class: "findings-list", id: "findings-list" });
    this.node = el("section", { class: "findings", id: "findings" },
      el("h3", {}, "Filter doctor"), legend(), this.summary, this.note, this.list);
    this.reports = [];
    this.current = {};
    this.active = null; // the finding last jumped to
  }

  setNote(text) {
    this.note.textContent = text || "";
  }

  /**
   * reports: [{run, report?: route reply, error?: message}] (null report: pending);
   * current: {run, tag} marks the entries of the series on screen.
   */
  update(reports, current = this.current) {
    this.reports = reports;
    this.current = current;
    this.render();
  }

  render() {
    const parts = [];
    let total = 0;
    let pending = 0;
    const groups = [];
    for (const { run, report, error } of this.reports) {
      if (error) {
        groups.push(el("div", { class: "findings-run", dataset: { run } },
          el("h4", {}, el("span", { class: "run-name" }, run)),
          el("div", { class: "findings-error" }, `The filter doctor could not check this run: ${error}`)));
        continue;
      }
      if (!report) {
        pending++;
        groups.push(el("div", { class: "findings-run", dataset: { run } },
          el("h4", {}, el("span", { class: "run-name" }, run)), el("div", { class: "dim" }, "checking…")));
        continue;
      }
      const found = report.findings || [];
      total += found.length;
      parts.push(`${run}: ${found.length}`);
      const byTag = groupFindings(found).flatMap((g) => g.tags);
      const unsure = found.filter((f) => f.problem === "suspected_dead").length;
      groups.push(el("div", { class: "findings-run", dataset: { run, count: String(found.length) } },
        el("h4", {}, el("span", { class: "run-name" }, run),
          el("span", { class: "dim" }, ` — ${found.length} finding${found.length === 1 ? "" : "s"} in ${report.series} series`)),
        found.length ? null : el("div", { class: "dim" }, "No problems found."),
        unsure ? el("div", { class: "dim findings-unsure" }, `${unsure} suspected dead: judged on too few inputs `
          + "to be sure; log more sample_inputs (the Logging docs say how many).") : null,
        ...byTag.map(({ tag, findings }) => this.tagGroup(run, tag, findings))));
    }
    this.summary.textContent = pending && !parts.length
      ? "checking…"
      : `${total} finding${total === 1 ? "" : "s"}` + (this.reports.length > 1 ? ` (${parts.join(", ")})` : "");
    setChildren(this.list, groups);
  }

  tagGroup(run, tag, findings) {
    const key = JSON.stringify([run, tag]);
    const all = this.expanded.has(key);
    const shown = all ? findings : findings.slice(0, PER_TAG);
    const isCurrent = run === this.current.run && tag === this.current.tag;
    return el("div", { class: `findings-tag${isCurrent ? " current" : ""}`, dataset: { run, tag } },
      el("div", { class: "findings-tag-name" }, tag),
      el("ul", {}, ...shown.map((f) => this.entry(f))),
      shown.length < findings.length
        ? el("button", { type: "button", class: "findings-more", onclick: () => { this.expanded.add(key); this.render(); } },
          `show all ${findings.length}`)
        : null);
  }

  entry(f) {
    const jump = () => this.options.onJump && this.options.onJump(f);
    const text = describeFinding(f);
    const a = this.active;
    const active = a && a.run === f.run && a.tag === f.tag && a.filter === f.filter && a.problem === f.problem;
    return el("li", {
      class: `finding${active ? " active" : ""}`,
      tabindex: "0",
      role: "button",
      title: `Show ${f.tag} at step ${f.first_step}` + (f.filter === null ? "" : `, filter ${f.filter}`),
      dataset: { run: f.run, tag: f.tag, filter: f.filter === null ? "layer" : String(f.filter), problem: f.problem, firstStep: String(f.first_step) },
      onclick: jump,
      onkeydown: (e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          jump();
        }
      },
    }, chip(f.problem), el("span", { class: "finding-filter" }, f.filter === null ? "layer" : `filter ${f.filter}`),
    el("span", { class: "finding-text" }, text));
  }
}
