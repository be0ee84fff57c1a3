// The per-filter health table (from the `stats` route): sortable, one
// sparkline per value over steps, flags (the filter doctor's findings),
// click a row to select the filter.

import { series } from "./analysis.js";
import { el, fmt } from "./dom.js";
import { mark } from "./marks.js";

const SHOWN = 200;
const SPARK_ROWS = 40; // rows whose sparklines are drawn per idle slice

/** Runs `fn` when the page is idle (a timer where there is no requestIdleCallback). */
function whenIdle(fn) {
  if (typeof requestIdleCallback === "function") requestIdleCallback(fn, { timeout: 200 });
  else setTimeout(fn, 0);
}
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

/** A 34x16 sparkline of [{step, value}] with a dot at `step`. */
export function sparkline(points, step) {
  const w = 34;
  const h = 16;
  const root = svg("svg", { class: "spark", width: w, height: h, viewBox: `0 0 ${w} ${h}` });
  const finite = points.filter((p) => p.value !== null && Number.isFinite(p.value));
  if (finite.length < 2) return root;
  const s0 = finite[0].step;
  const s1 = finite[finite.length - 1].step;
  let lo = Infinity;
  let hi = -Infinity;
  for (const p of finite) {
    lo = Math.min(lo, p.value);
    hi = Math.max(hi, p.value);
  }
  const x = (s) => 1 + ((s - s0) / Math.max(s1 - s0, 1)) * (w - 2);
  const y = (v) => (hi > lo ? h - 2 - ((v - lo) / (hi - lo)) * (h - 4) : h / 2);
  root.append(svg("polyline", { points: finite.map((p) => `${x(p.step).toFixed(1)},${y(p.value).toFixed(1)}`).join(" ") }));
  const here = finite.find((p) => p.step === step);
  if (here) root.append(svg("circle", { cx: x(here.step).toFixed(1), cy: y(here.value).toFixed(1), r: 2 }));
  return root;
}

export class HealthTable {
  /** options.onSelect(filter) */
  constructor(options = {}) {
    this.options = options;
    this.sortKey = "filter";
    this.descending = false;
    this.showAll = false;
    this.onlyFlagged = false;
    this.selected = null;
    this.summary = el("div", { class: "health-summary" });
    this.flagNote = el("div", { class: "health-flag-note", id: "health-flag-note" });
    this.flaggedToggle = el("input", {
      type: "checkbox", id: "health-flagged-only",
      onchange: () => { this.onlyFlagged = this.flaggedToggle.checked; this.render(); },
    });
    this.table = el("table", { class: "health-table", id: "health-table" });
    this.more = el("button", { type: "button", class: "health-more", hidden: true, onclick: () => { this.showAll = true; this.render(); } });
    this.node = el("section", { class: "health", id: "health" },
      el("header", { class: "health-header" }, el("h3", {}, "Filter health"),
        el("label", { class: "ctl", title: "Show only filters with a flag" }, this.flaggedToggle, el("span", {}, "only flagged"))),
      this.summary, this.flagNote, el("div", { class: "health-scroll" }, this.table), this.more);
    this.data = null;
  }

  /**
   * data: {stats, kind, tag, step, drift?: Float64Array, label(f) -> string,
   * flags: per filter [{problem, title, later?}] or null while pending, flagNote: where
   * the flags come from}
   */
  update(data) {
    this.data = data;
    this.render();
  }

  /**
   * The sparkline of filter `f`'s `key` at the shown step: drawn once per statistics
   * answer and step, then moved into each new rendering of the table (flags arriving,
   * sorting) instead of drawn again.
   */
  spark(f, key) {
    const { stats, step } = this.data;
    if (!this.sparks || this.sparks.stats !== stats || this.sparks.step !== step) this.sparks = { stats, step, nodes: new Map() };
    const id = `${f}:${key}`;
    if (!this.sparks.nodes.has(id)) this.sparks.nodes.set(id, sparkline(series(stats, key, f), step));
    return this.sparks.nodes.get(id);
  }

  /** Fills the rows' sparkline slots a slice at a time in idle time, the rows of the table on screen first. */
  fillSparks(slots) {
    const gen = (this.gen = (this.gen || 0) + 1);
    const { tag, step } = this.data;
    let i = 0;
    const slice = () => {
      if (gen !== this.gen) return; // rendered again since
      const end = Math.min(slots.length, i + SPARK_ROWS * 3);
      for (; i < end; i++) {
        const [slot, f, key] = slots[i];
        slot.replaceWith(this.spark(f, key));
      }
      if (i < slots.length) whenIdle(slice);
      else mark("sparklines", { tag, step });
    };
    whenIdle(slice);
  }

  select(f) {
    this.selected = f;
    for (const tr of this.table.querySelectorAll("tr[data-filter]")) {
      tr.classList.toggle("selected", Number(tr.dataset.filter) === f);
    }
    const row = this.table.querySelector(`tr[data-filter="${f}"]`);
    if (row) row.scrollIntoView({ block: "nearest" });
  }

  columns() {
    const { kind, drift } = this.data;
    const cols = [
      ["norm", "norm", "L2 norm"],
      ["mean", "mean", "mean"],
      ["std", "std", "standard deviation"],
      ["zero_frac", kind === "activation" ? "dead" : "≈0", kind === "activation"
        ? "fraction of positions never active (<= 0 for every sample)"
        : "fraction of weights with |w| <= 1e-6"],
      ["nonfinite", "NaN", "fraction of NaN/Inf values"],
    ];
    if (drift) cols.push(["drift", "drift", "cosine distance to the first step"]);
    return cols;
  }

  render() {
    const d = this.data;
    if (!d || !d.stats) {
      this.table.replaceChildren();
      this.summary.textContent = d && d.message ? d.message : "";
      this.flagNote.textContent = "";
      this.more.hidden = true;
      return;
    }
    this.flagNote.textContent = d.flagNote || "";
    const { stats, step } = d;
    const current = stats.steps.find((s) => s.step === step);
    if (!current || !current.values) {
      this.table.replaceChildren();
      this.summary.textContent = current && current.error ? current.error : `no statistics for step ${step}`;
      return;
    }
    const rows = current.values;
    const flags = rows.map((_, f) => (d.flags && d.flags[f]) || []);
    const counts = {};
    flags.flat().forEach((x) => { counts[x.problem] = (counts[x.problem] || 0) + 1; });
    const parts = Object.entries(counts).map(([k, v]) => `${v} ${k}`);
    const flagged = flags.filter((x) => x.length).length;
    this.summary.textContent = `${rows.length} filters at step ${step}` + (d.flags === null
      ? " — checking for problems…"
      : parts.length ? ` — ${flagged} flagged: ${parts.join(", ")}` : " — no problems flagged");
    const cols = this.columns();
    const value = (f, key) => {
      if (key === "filter") return f;
      if (key === "drift") return d.drift ? d.drift[f] : null;
      if (key === "flags") return flags[f].length;
      const v = rows[f][stats.names.indexOf(key)];
      return v === null ? NaN : v;
    };
    const order = rows.map((_, f) => f);
    const sign = this.descending ? -1 : 1;
    const key = (f) => {
      const v = value(f, this.sortKey);
      return Number.isFinite(v) ? v : -Infinity;
    };
    order.sort((a, b) => sign * (key(a) - key(b)) || a - b);
    const listed = this.onlyFlagged ? order.filter((f) => flags[f].length) : order;
    const shown = this.showAll ? listed : listed.slice(0, SHOWN);
    const head = el("tr", {},
      ...[["filter", "#", "filter index"], ...cols, ["flags", "flags", "problems found (hover a flag for the numbers)"]].map(([k, text, title]) =>
        el("th", {
          title,
          dataset: { key: k },
          class: k === this.sortKey ? (this.descending ? "sorted desc" : "sorted asc") : null,
          onclick: () => {
            if (this.sortKey === k) this.descending = !this.descending;
            else { this.sortKey = k; this.descending = k !== "filter"; }
            this.render();
          },
        }, text)));
    const slots = []; // [placeholder, filter, key]: sparklines drawn after the table is on screen
    const spark = (f, k) => {
      const node = this.sparks && this.sparks.stats === stats && this.sparks.step === step && this.sparks.nodes.get(`${f}:${k}`);
      if (node) return node;
      const slot = el("span", { class: "spark-slot" });
      slots.push([slot, f, k]);
      return slot;
    };
    const body = shown.map((f) => el("tr", {
      dataset: { filter: f },
      class: f === this.selected ? "selected" : null,
      onclick: () => { this.select(f); if (this.options.onSelect) this.options.onSelect(f); },
    },
    el("td", { class: "idx" }, d.label ? d.label(f) : String(f)),
    ...cols.map(([k]) => {
      if (k === "drift") return el("td", { class: "num" }, fmt(d.drift[f], 3));
      if (k === "nonfinite") return el("td", { class: "num" }, fmt(rows[f][stats.names.indexOf(k)], 3));
      return el("td", { class: "num" }, el("span", {}, fmt(rows[f][stats.names.indexOf(k)], 3)), spark(f, k));
    }),
    el("td", { class: "flags" }, ...flags[f].map((x) => el("span", {
      class: `flag flag-${x.problem}${x.later ? " later" : ""}`,
      dataset: { problem: x.problem },
      title: x.title || x.problem,
    }, x.problem)))));
    const empty = this.onlyFlagged && !listed.length
      ? [el("tr", { class: "health-empty" }, el("td", { colspan: String(cols.length + 2) }, d.flags === null ? "checking…" : "no flagged filters"))]
      : [];
    this.table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...body, ...empty));
    mark("health", { tag: d.tag, step, rows: shown.length, flags: d.flags !== null });
    this.fillSparks(slots);
    this.more.hidden = shown.length === listed.length;
    this.more.textContent = `show all ${listed.length} filters`;
  }
}
