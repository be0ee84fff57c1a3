// The Filters dashboard: controls, one grid panel per compared run (sharing
// one step slider), the filter doctor's findings (badges, list, health flags),
// the health table and the detail view. The state lives in the URL hash
// (state.js), mirrored into TensorBoard's page URL.

import { cosineDrift, difference, healthFlags, nearDuplicates, orderBy } from "./analysis.js";
import * as api from "./api.js";
import { COLORMAPS, isSigned, lut } from "./colormap.js";
import { DetailView } from "./detail.js";
import { chip, DoctorView, legend } from "./doctorview.js";
import { el, fillSelect, fmt, setChildren } from "./dom.js";
import {
  badgesFor, describeFinding, findingFilter, findingsByFilter, PROBLEMS, seriesFindings, stepAtOrAfter,
} from "./findings.js";
import { HealthTable } from "./health.js";
import { canonicalize, filterCells, filterCount, IMAGE_KINDS } from "./layout.js";
import { cellLimits, limitsFromStats, MODE_LABELS, MODES } from "./normalize.js";
import { GridView } from "./gridview.js";
import { PatternHover } from "./patterns.js";
import { decode, encode, stepIndex, unionSteps } from "./state.js";

const POLL_MS = 30000;
const PLAY_MS = 700;
const CACHE_BYTES = 384 * 1024 * 1024;
// drift needs the first step's tensor too: only fetched for tensors up to this size
const DRIFT_MAX_BYTES = 64 * 1024 * 1024;
const PARENT_KEY = "cf";
const IMAGE_TILE = 192;

/** A small byte-bounded LRU of tensor promises. */
class TensorCache {
  constructor(limit) {
    this.limit = limit;
    this.map = new Map();
  }

  /** `cap` ({maxFilters, maxChannels}) asks for a smaller view; it is part of the key. */
  get(run, tag, step, cap = null) {
    const caps = cap ? { maxFilters: cap.maxFilters, maxChannels: cap.maxChannels } : {};
    const key = JSON.stringify([run, tag, String(step), caps.maxFilters ?? null, caps.maxChannels ?? null]);
    if (this.map.has(key)) {
      const entry = this.map.get(key);
      this.map.delete(key);
      this.map.set(key, entry);
      return entry.promise;
    }
    const entry = { promise: api.tensor(run, tag, step, {}, caps), bytes: 0 };
    entry.promise.then((t) => { entry.bytes = t.buffer.byteLength; this.trim(); }, () => this.map.delete(key));
    this.map.set(key, entry);
    return entry.promise;
  }

  trim() {
    let total = 0;
    for (const e of this.map.values()) total += e.bytes;
    for (const [key, e] of this.map) {
      if (total <= this.limit || this.map.size <= 3) break;
      total -= e.bytes;
      this.map.delete(key);
    }
  }

  clear() {
    this.map.clear();
  }
}

/** The state mirrored into TensorBoard's hash ("#convfilters&cf=..."), or null. */
function parentState() {
  try {
    const hash = window.parent !== window ? window.parent.location.hash : "";
    if (!/^#convfilters(&|$)/.test(hash)) return null;
    return new URLSearchParams(hash.replace(/^#[^&]*&?/, "")).get(PARENT_KEY);
  } catch {
    return null;
  }
}

function safeName(s) {
  return String(s || "").replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 80);
}

function save(blob, name) {
  const href = URL.createObjectURL(blob);
  const a = el("a", { href, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10000);
}

/**
 * The largest view of a tensor that fits the server's size limit, from a 413
 * body: the first `maxFilters` filters (and `maxChannels` input channels when
 * even one filter is too big). `filters` / `channels` are the axis lengths.
 */
export function fittingCap(nbytes, limit, filters, channels) {
  const maxFilters = Math.floor((limit * filters) / nbytes);
  if (maxFilters >= 1) return { maxFilters: Math.min(maxFilters, filters), maxChannels: null };
  const maxChannels = channels ? Math.max(1, Math.floor((limit * filters * channels) / nbytes)) : null;
  return { maxFilters: 1, maxChannels };
}

/** Lengths of the axes `max_filters` / `max_channels` cap in a tag's layout (channels null if none). */
function capAxes(info) {
  const { layout, shape } = info;
  if (typeof layout !== "string" || !Array.isArray(shape)) return null;
  const images = IMAGE_KINDS.includes(info.kind) && layout.includes("N");
  const filterLetter = images ? "N" : ["O", "C"].find((c) => layout.includes(c)) || (layout.includes("M") ? "I" : null);
  const channelLetter = !images && layout.includes("O") ? "I" : null;
  if (!filterLetter) return null;
  return {
    filters: shape[layout.indexOf(filterLetter)],
    channels: channelLetter ? shape[layout.indexOf(channelLetter)] : null,
  };
}

function label(text, control, extra = {}) {
  return el("label", { class: "ctl", ...extra }, el("span", { class: "ctl-label" }, text), control);
}

/** One grid: a run's tensor (or a diff) at the shared step. */
class Panel {
  constructor(dashboard, run) {
    this.dashboard = dashboard;
    this.run = run;
    this.view = new GridView({
      className: "main-grid",
      onClick: (hit) => dashboard.clickCell(this, hit),
      onView: (view) => dashboard.syncView(this, view),
      maxHeight: () => dashboard.gridHeight(),
      hoverExtra: (hit, view) => dashboard.hoverExtra(this, hit, view),
    });
    this.title = el("span", { class: "panel-title" });
    this.status = el("div", { class: "panel-status", role: "status" });
    this.colorbar = el("canvas", { class: "colorbar", width: 256, height: 12 });
    this.barLabels = el("div", { class: "colorbar-labels" });
    this.banner = el("div", { class: "panel-banner", role: "status", hidden: true });
    this.legend = el("div", { class: "panel-legend", hidden: true });
    this.partial = el("div", { class: "panel-partial", role: "status", hidden: true });
    // {tag, maxFilters, maxChannels, filters, channels}: a smaller view asked for after a 413
    this.cap = null;
    this.node = el(
      "section",
      { class: "panel" },
      el("header", { class: "panel-header" }, this.title, el("span", { class: "panel-buttons" },
        el("button", { type: "button", class: "png", title: "Download this view as PNG", onclick: () => this.downloadPng() }, "PNG"),
        el("button", { type: "button", class: "npy", title: "Download this step's tensor as .npy (as logged)", onclick: () => this.downloadNpy() }, ".npy"))),
      el("div", { class: "colorbar-row" }, this.colorbar, this.barLabels),
      this.banner,
      this.legend,
      this.partial,
      this.status,
      this.view.node,
    );
    this.loaded = null;
    this.node.dataset.run = run;
    this.setTitle("");
  }

  setTitle(extra) {
    setChildren(this.title, el("span", { class: "run-name" }, this.run), extra ? el("span", { class: "panel-extra" }, extra) : null);
  }

  /** The frozen-layer banner (findings with filter null), or none. */
  setBanner(findings) {
    const list = findings || [];
    this.banner.hidden = !list.length;
    this.banner.dataset.problem = list.length ? list[0].problem : "";
    setChildren(this.banner, list.map((f) => el("div", {}, chip(f.problem), " ",
      `This layer is ${f.problem}: `, describeFinding(f).replace(/^frozen: /, ""),
      ". Was it meant to train (trainable / requires_grad)?")));
  }

  /** The legend of the badge colours present on this grid. */
  setLegend(problems) {
    this.legend.hidden = !problems.length;
    setChildren(this.legend, problems.length ? [el("span", { class: "dim" }, "Badges:"), legend(problems)] : []);
  }

  setStatus(text, kind = "info") {
    this.status.textContent = text || "";
    this.status.dataset.kind = kind;
  }

  /** The cap in force for `tag`, or null. */
  capFor(tag) {
    return this.cap && this.cap.tag === tag ? this.cap : null;
  }

  /** Labels a grid drawn from a capped view ("filters 0–N-1 of F"), or hides the label. */
  setPartial(cap) {
    this.partial.hidden = !cap;
    if (!cap) {
      this.partial.textContent = "";
      return;
    }
    const shownFilters = Math.min(cap.maxFilters, cap.filters);
    const parts = [`filters 0–${shownFilters - 1} of ${cap.filters}`];
    if (cap.maxChannels && cap.channels) {
      parts.push(`input channels 0–${Math.min(cap.maxChannels, cap.channels) - 1} of ${cap.channels}`);
    }
    this.partial.textContent = `Partial view: ${parts.join(", ")} (the whole tensor is over the server's size limit).`;
  }

  /** Next to a 413 message: a button that draws the first filters that fit. */
  offerCap(cap) {
    const n = cap.maxFilters;
    const text = `Show the first ${n} filter${n === 1 ? "" : "s"}`
      + (cap.maxChannels ? ` (first ${cap.maxChannels} input channel${cap.maxChannels === 1 ? "" : "s"})` : "");
    this.status.append(" ", el("button", {
      type: "button",
      class: "cap-offer",
      onclick: () => {
        this.cap = cap;
        this.dashboard.showStep();
      },
    }, text));
  }

  clear(message, kind = "info") {
    this.loaded = null;
    this.setStatus(message, kind);
    this.view.data = null;
    const c = this.view.canvas;
    c.width = 1;
    c.height = 1;
    c.style.width = "1px";
    c.style.height = "1px";
    c.dataset.run = this.run;
    c.dataset.tag = this.dashboard.state.tag || "";
    c.dataset.step = "";
    this.view.setHighlight(null);
    this.view.setMarks(null);
    this.setBanner(null);
    this.setLegend([]);
    this.setPartial(null);
  }

  /** The grid as shown, with what is drawn over it (block labels, badges), as a PNG. */
  downloadPng() {
    const c = this.view.canvas;
    const over = this.view.overlay;
    let image = c;
    if (over && over.width === c.width && over.height === c.height) {
      image = el("canvas", { width: c.width, height: c.height });
      const ctx = image.getContext("2d");
      ctx.drawImage(c, 0, 0);
      ctx.drawImage(over, 0, 0);
    }
    image.toBlob((blob) => {
      if (blob) save(blob, `${safeName(this.run)}_${safeName(c.dataset.tag)}_${c.dataset.step}.png`);
    }, "image/png");
  }

  downloadNpy() {
    if (!this.loaded) return;
    const { tensor } = this.loaded;
    save(new Blob([tensor.buffer], { type: "application/octet-stream" }),
      `${safeName(this.run)}_${safeName(this.dashboard.state.tag)}_${tensor.step}.npy`);
  }
}

export class Dashboard {
  constructor(root) {
    this.root = root;
    this.state = decode(this.initialHash());
    this.tags = {};
    this.steps = [];
    this.stepsByRun = new Map();
    this.cache = new TensorCache(CACHE_BYTES);
    this.statsCache = new Map();
    this.findingsCache = new Map();
    this.healthBase = null;
    this.panels = [];
    this.token = 0;
    this.stepsSeq = 0; // the latest loadSteps call
    this.playing = null;
    this.dark = false;
    this.health = new HealthTable({ onSelect: (f) => this.select(f, true) });
    this.detail = new DetailView(this);
    this.doctor = new DoctorView({ onJump: (f) => this.jumpTo(f) });
    this.patternHover = new PatternHover(this);
    this.build();
  }

  // ---- URL state ----

  /** The state to start from: the iframe's own hash, else the one mirrored into TensorBoard's URL. */
  initialHash() {
    if (location.hash.length > 1) return location.hash;
    return parentState() || "";
  }

  /**
   * Writes the state into the iframe's hash and, while the Filters tab is the
   * one shown (TensorBoard's hash starts with "#convfilters"), mirrors it as
   * "#convfilters&cf=<state>", which TensorBoard keeps, so the page URL is a
   * shareable link and survives a reload.
   */
  writeHash() {
    const hash = encode(this.state);
    const here = `${location.pathname}${location.search}#${hash}`;
    if (location.hash.replace(/^#/, "") !== hash) history.replaceState(null, "", here);
    try {
      const p = window.parent;
      if (p === window || !/^#convfilters(&|$)/.test(p.location.hash)) return;
      const want = `#convfilters&${PARENT_KEY}=${encodeURIComponent(hash)}`;
      if (p.location.hash !== want) p.history.replaceState(p.history.state, "", `${p.location.pathname}${p.location.search}${want}`);
    } catch {
      // not same-origin: the iframe's own hash and "copy link" still work
    }
  }

  shareLink() {
    try {
      if (window.parent !== window) return window.parent.location.href;
    } catch {
      // fall through
    }
    return location.href;
  }

  async copyLink() {
    this.writeHash();
    const link = this.shareLink();
    this.controls.link.value = link;
    this.controls.link.hidden = false;
    this.controls.link.select();
    try {
      await navigator.clipboard.writeText(link);
      this.controls.copy.textContent = "Copied";
    } catch {
      this.controls.copy.textContent = "Copy the link";
    }
    setTimeout(() => { this.controls.copy.textContent = "Copy link"; }, 2000);
  }

  // ---- DOM ----

  build() {
    const c = (this.controls = {});
    c.run = el("select", { id: "run-select", onchange: () => this.change({ run: c.run.value, step: null, sel: null }) });
    c.tag = el("select", { id: "tag-select", onchange: () => this.change({ tag: c.tag.value, step: null, sel: null, sample: 0, zoom: null }) });
    c.compareList = el("div", { id: "compare-runs", class: "compare-list" });
    c.compare = el("details", { id: "compare", class: "compare" }, el("summary", {}, "Compare runs"), c.compareList);
    c.slider = el("input", { type: "range", id: "step-slider", min: "0", max: "0", value: "0", "aria-label": "Step", oninput: () => this.slide() });
    c.stepLabel = el("output", { id: "step-label", class: "step-label" });
    c.play = el("button", { type: "button", id: "play", title: "Play / pause through the steps", onclick: () => this.togglePlay() }, "▶");
    c.prev = el("button", { type: "button", id: "prev-step", title: "Previous step ([)", onclick: () => this.nudge(-1) }, "‹");
    c.next = el("button", { type: "button", id: "next-step", title: "Next step (])", onclick: () => this.nudge(1) }, "›");
    c.cmap = fillSelect(el("select", { id: "cmap-select", onchange: () => this.change({ cmap: c.cmap.value }) }), COLORMAPS);
    c.norm = fillSelect(
      el("select", { id: "norm-select", onchange: () => this.change({ norm: c.norm.value }) }),
      MODES.map((m) => [m, MODE_LABELS[m]]),
    );
    c.pct = el("input", {
      type: "number", id: "pct-input", min: "50", max: "100", step: "0.1",
      title: "Colour limits from this percentile of |value| (symmetric), so one outlier does not wash out the rest",
      onchange: () => {
        const v = Number(c.pct.value);
        if (v >= 50 && v <= 100) this.change({ pct: v });
      },
    });
    c.diff = fillSelect(el("select", { id: "diff-select", onchange: () => this.change({ diff: c.diff.value }) }), [
      ["none", "weights"], ["first", "− first step"], ["run", "− another run"],
    ]);
    c.base = el("select", { id: "base-select", onchange: () => this.change({ base: c.base.value }) });
    c.baseLabel = label("minus run", c.base, { hidden: true });
    c.sort = fillSelect(el("select", { id: "sort-select", onchange: () => this.change({ sort: c.sort.value }) }), [
      ["none", "index"], ["norm", "norm"], ["drift", "drift"],
    ]);
    c.rgb = el("input", { type: "checkbox", id: "rgb-toggle", onchange: () => this.change({ rgb: c.rgb.checked }) });
    c.rgbLabel = label("RGB", c.rgb, { hidden: true, title: "Draw each 3-channel filter as one colour tile" });
    c.sample = el("input", { type: "number", id: "sample-input", min: "0", value: "0", onchange: () => this.change({ sample: Math.max(0, Number(c.sample.value) || 0) }) });
    c.sampleLabel = label("Sample", c.sample, { hidden: true });
    c.reload = el("button", { type: "button", id: "reload", title: "Reload runs, tags and steps (also every 30 s)", onclick: () => this.reload() }, "⟳ Reload");
    c.copy = el("button", { type: "button", id: "copy-link", title: "Copy a link to this view", onclick: () => this.copyLink() }, "Copy link");
    c.link = el("input", { type: "text", id: "share-link", readonly: true, hidden: true });
    c.description = el("div", { class: "description", id: "tag-description" });
    this.message = el("div", { class: "message", id: "message", role: "alert", hidden: true });
    this.loading = el("span", { class: "loading", id: "loading", hidden: true }, "loading…");
    this.panelsNode = el("div", { class: "panels", id: "panels" });
    this.side = el("aside", { class: "side", id: "side" }, this.detail.node, this.doctor.node, this.health.node);
    this.root.classList.add("convfilters");
    this.root.replaceChildren(el("div", { class: "app" },
      el("div", { class: "toolbar" },
        label("Run", c.run), label("Tag", c.tag), c.compare, c.reload, c.copy, c.link, this.loading),
      el("div", { class: "toolbar" },
        el("span", { class: "step-box" }, c.prev, c.play, c.next, label("Step", c.slider), c.stepLabel),
        label("Colormap", c.cmap), label("Scale", c.norm), label("Percentile", c.pct),
        label("Show", c.diff), c.baseLabel, label("Sort rows", c.sort), c.rgbLabel, c.sampleLabel),
      c.description, this.message,
      el("div", { class: "main" }, this.panelsNode, this.side)));
    this.root.addEventListener("keydown", (e) => {
      if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
      if (e.target instanceof HTMLCanvasElement) return;
      if (e.key === "[") this.nudge(-1);
      if (e.key === "]") this.nudge(1);
    });
  }

  /** Canvas height that keeps a grid within the window (below the toolbars and panel header). */
  gridHeight() {
    const top = this.panelsNode.getBoundingClientRect().top + window.scrollY;
    return Math.max(260, window.innerHeight - top - 64);
  }

  showMessage(text, kind = "error") {
    this.message.textContent = text || "";
    this.message.dataset.kind = kind;
    this.message.hidden = !text;
  }

  setLoading(on, text = "loading…") {
    this.loading.hidden = !on;
    this.loading.textContent = text;
  }

  // ---- lifecycle ----

  async start() {
    this.watchTheme();
    window.addEventListener("hashchange", () => this.fromHash());
    try {
      // a shared link pasted while the dashboard is open only changes TensorBoard's hash
      if (window.parent !== window) window.parent.addEventListener("hashchange", () => this.fromParentHash());
    } catch {
      // not same-origin
    }
    let resize = null;
    window.addEventListener("resize", () => {
      clearTimeout(resize);
      resize = setTimeout(() => this.panels.forEach((p) => p.view.draw()), 100);
    });
    this.pollTimer = setInterval(() => this.poll(), POLL_MS);
    await this.loadTags();
  }

  async fromParentHash() {
    const hash = parentState();
    if (hash === null) return;
    const next = decode(hash);
    if (encode(next) === encode(this.state)) return;
    this.state = next;
    await this.loadTags(this.tags);
  }

  async fromHash() {
    const next = decode(location.hash);
    if (encode(next) === encode(this.state)) return;
    this.state = next;
    await this.loadTags(this.tags);
  }

  watchTheme() {
    const media = window.matchMedia("(prefers-color-scheme: dark)");
    const apply = () => {
      let dark = media.matches;
      try {
        if (window.parent !== window) dark = window.parent.document.body.classList.contains("dark-mode");
      } catch {
        // cross-origin parent: prefers-color-scheme only
      }
      if (dark === this.dark && this.themeSet) return;
      this.themeSet = true;
      this.dark = dark;
      this.root.classList.toggle("dark", dark);
      this.root.dataset.theme = dark ? "dark" : "light";
      this.redraw();
    };
    apply();
    media.addEventListener("change", apply);
    try {
      if (window.parent !== window) {
        new MutationObserver(apply).observe(window.parent.document.body, { attributes: true, attributeFilter: ["class"] });
      }
    } catch {
      // cross-origin parent
    }
  }

  async reload() {
    this.cache.clear();
    this.statsCache.clear();
    this.findingsCache.clear();
    this.patternHover.clear();
    this.tags = {};
    await this.loadTags();
  }

  async poll() {
    try {
      const tags = await api.tags();
      if (JSON.stringify(tags) !== JSON.stringify(this.tags)) {
        this.findingsCache.clear();
        await this.loadTags(tags);
        return;
      }
      const before = this.steps.length;
      await this.loadSteps(false);
      if (this.steps.length !== before) {
        this.statsCache.clear();
        this.findingsCache.clear();
        this.updateSide();
        this.updateFindings();
      }
    } catch (e) {
      this.showMessage(`Checking for new data failed: ${e.message}`);
    }
  }

  // ---- data flow: tags -> steps -> tensors ----

  async loadTags(prefetched = null) {
    try {
      this.tags = prefetched && Object.keys(prefetched).length ? prefetched : await api.tags();
    } catch (e) {
      this.showMessage(`Could not list tags: ${e.message}`);
      return;
    }
    const runs = Object.keys(this.tags).sort();
    if (!runs.length) {
      this.showEmpty();
      return;
    }
    this.root.classList.remove("is-empty");
    this.showMessage("");
    const s = this.state;
    if (!runs.includes(s.run)) s.run = runs.find((r) => s.tag !== null && this.tags[r][s.tag]) || runs[0];
    const tagNames = Object.keys(this.tags[s.run]).sort();
    if (!tagNames.includes(s.tag)) {
      s.tag = tagNames.find((t) => this.tags[s.run][t].kind === "kernel") || tagNames[0];
    }
    s.compare = [...new Set(s.compare)].filter((r) => r !== s.run && this.tags[r]);
    if (s.base === null || !this.tags[s.base]) s.base = runs.find((r) => r !== s.run) || s.run;
    this.fillControls(runs, tagNames);
    this.ensurePanels();
    await this.loadSteps(true);
  }

  fillControls(runs, tagNames) {
    const s = this.state;
    const c = this.controls;
    fillSelect(c.run, runs, s.run);
    const byKind = {};
    for (const t of tagNames) (byKind[this.tags[s.run][t].kind] ||= []).push(t);
    c.tag.replaceChildren(...Object.entries(byKind).map(([kind, list]) =>
      el("optgroup", { label: `${kind}s` }, ...list.map((t) => el("option", { value: t }, t)))));
    c.tag.value = s.tag;
    c.compareList.replaceChildren(...runs.filter((r) => r !== s.run).map((r) => {
      const has = Boolean(this.tags[r][s.tag]);
      return el("label", { class: "compare-run", title: has ? "" : `no ${s.tag} in this run` },
        el("input", {
          type: "checkbox", dataset: { run: r }, checked: s.compare.includes(r), disabled: !has,
          onchange: (e) => {
            const set = new Set(this.state.compare);
            if (e.target.checked) set.add(r);
            else set.delete(r);
            this.change({ compare: runs.filter((x) => set.has(x)) });
          },
        }), el("span", {}, r));
    }));
    if (runs.length < 2) c.compareList.replaceChildren(el("span", { class: "dim" }, "only one run"));
    c.compare.querySelector("summary").textContent = s.compare.length ? `Compare runs (${s.compare.length + 1})` : "Compare runs";
    fillSelect(c.base, runs, s.base);
    c.cmap.value = s.cmap;
    c.norm.value = s.norm;
    c.pct.value = String(s.pct);
    c.diff.value = s.diff;
    c.sort.value = s.sort;
    c.rgb.checked = s.rgb;
    c.sample.value = String(s.sample);
    c.baseLabel.hidden = s.diff !== "run";
    const info = this.info();
    c.description.textContent = info.description || "";
    const shape = info.shape || [];
    c.rgbLabel.hidden = !(info.kind === "kernel" && !String(info.layout).includes("M")
      && ((shape[String(info.layout).indexOf("I")] === 3) || (info.image_shape && info.image_shape[2] === 3)));
    c.sampleLabel.hidden = info.kind !== "activation";
    if (info.kind === "activation") c.sample.max = String(Math.max(0, (shape[0] || 1) - 1));
  }

  info(run = this.state.run, tag = this.state.tag) {
    return (this.tags[run] && this.tags[run][tag]) || {};
  }

  showEmpty() {
    this.panels = [];
    this.root.classList.add("is-empty");
    this.panelsNode.replaceChildren(
      el("div", { class: "empty", id: "empty" },
        el("h2", {}, "No filters logged yet — see README"),
        el("p", {}, "Log kernels or activations with tb_convfilters (the Keras callback, the PyTorch hook, "
          + "tb_convfilters.Writer or the summary ops) into this logdir; the README shows how. "
          + "This page checks for new data every 30 s; press Reload to check now.")),
    );
    this.health.update(null);
    this.doctor.update([]);
    this.detail.close();
    fillSelect(this.controls.run, []);
    this.controls.tag.replaceChildren();
    this.controls.stepLabel.textContent = "";
  }

  /** Runs shown: the chosen run first, then compared runs that have the tag. */
  shownRuns() {
    const s = this.state;
    return [s.run, ...s.compare.filter((r) => r !== s.run && this.info(r, s.tag).kind)];
  }

  ensurePanels() {
    const runs = this.shownRuns();
    const old = new Map(this.panels.map((p) => [p.run, p]));
    this.panels = runs.map((r) => old.get(r) || new Panel(this, r));
    this.panelsNode.replaceChildren(...this.panels.map((p) => p.node));
    this.panelsNode.dataset.count = String(this.panels.length);
  }

  async loadSteps(show) {
    const s = this.state;
    const runs = [...new Set([...this.shownRuns(), ...(s.diff === "run" ? [s.base] : [])])];
    // A newer selection may start another listing while this one waits: drop stale answers.
    const seq = ++this.stepsSeq;
    let lists;
    try {
      lists = await Promise.all(runs.map((r) => (this.info(r, s.tag).kind ? api.steps(r, s.tag) : [])));
    } catch (e) {
      if (seq === this.stepsSeq) this.showMessage(`Could not list the steps of ${s.tag}: ${e.message}`);
      return;
    }
    if (seq !== this.stepsSeq) return;
    runs.forEach((r, i) => this.stepsByRun.set(r, lists[i].map((d) => d.step)));
    this.steps = unionSteps(this.shownRuns().map((r) => this.stepsByRun.get(r) || []));
    const slider = this.controls.slider;
    slider.max = String(Math.max(0, this.steps.length - 1));
    slider.disabled = this.steps.length < 2;
    let i = s.step === null ? -1 : stepIndex(this.steps, s.step);
    if (i < 0) i = this.steps.length - 1;
    slider.value = String(i);
    if (show || s.step !== this.steps[i]) {
      s.step = this.steps.length ? this.steps[i] : null;
      await this.showStep();
    } else {
      this.updateStepLabel();
    }
  }

  updateStepLabel() {
    const i = Number(this.controls.slider.value);
    this.controls.stepLabel.textContent = this.steps.length
      ? `${this.state.step} (${i + 1}/${this.steps.length})`
      : "no steps";
  }

  slide() {
    const i = Number(this.controls.slider.value);
    if (this.steps[i] === undefined) return;
    this.state.step = this.steps[i];
    this.showStep();
  }

  nudge(delta) {
    const i = Math.min(this.steps.length - 1, Math.max(0, Number(this.controls.slider.value) + delta));
    this.controls.slider.value = String(i);
    this.slide();
  }

  togglePlay() {
    if (this.playing) {
      clearTimeout(this.playing);
      this.playing = null;
      this.controls.play.textContent = "▶";
      return;
    }
    this.controls.play.textContent = "❚❚";
    const tick = async () => {
      let i = Number(this.controls.slider.value) + 1;
      if (i >= this.steps.length) i = 0;
      this.controls.slider.value = String(i);
      this.state.step = this.steps[i];
      await this.showStep();
      if (this.playing) this.playing = setTimeout(tick, PLAY_MS);
    };
    this.playing = setTimeout(tick, 0);
  }

  change(patch) {
    Object.assign(this.state, patch);
    if (["run", "tag", "compare", "diff", "base"].some((k) => k in patch)) {
      if ("run" in patch || "tag" in patch) this.detail.close();
      this.loadTags(this.tags);
    } else {
      this.showStep();
    }
  }

  async stats(run, tag) {
    const key = JSON.stringify([run, tag]);
    if (!this.statsCache.has(key)) {
      const p = api.stats(run, tag);
      p.catch(() => this.statsCache.delete(key));
      this.statsCache.set(key, p);
    }
    return this.statsCache.get(key);
  }

  /** Loads every panel's tensor at the current step, then draws them together. */
  async showStep() {
    const s = this.state;
    const token = ++this.token;
    this.updateStepLabel();
    this.writeHash();
    const step = s.step;
    if (step === null || step === undefined) {
      this.panels.forEach((p) => p.clear("No steps logged for this tag yet."));
      return;
    }
    const timer = setTimeout(() => this.setLoading(true, `loading step ${step}…`), 150);
    let results;
    try {
      results = await Promise.all(this.panels.map((p) => this.loadPanel(p, step)));
    } finally {
      clearTimeout(timer);
      if (token === this.token) this.setLoading(false);
    }
    if (token !== this.token) return;
    const signed = isSigned(s.cmap);
    const fixed = await this.fixedLimits(results, signed);
    if (token !== this.token) return;
    const order = await this.rowOrder(results[0]);
    if (token !== this.token) return;
    this.panels.forEach((p, i) => this.drawPanel(p, results[i], fixed, order));
    this.updateSide();
    this.updateFindings();
  }

  /** [lo, hi] shared by the panels for the fixed modes, or null. */
  async fixedLimits(results, signed) {
    const s = this.state;
    if (s.norm !== "steps" && s.norm !== "runs") return null;
    // images are drawn on their own [0, 1] scale and have no statistics
    if (IMAGE_KINDS.includes(this.info().kind) && s.diff === "none") return null;
    if (s.diff === "none") {
      const runs = s.norm === "runs" ? this.panels.map((p) => p.run) : [s.run];
      try {
        return limitsFromStats(await Promise.all(runs.map((r) => this.stats(r, s.tag))), s.pct, signed);
      } catch (e) {
        this.showMessage(`Could not load statistics for fixed colour limits: ${e.message}`);
        return null;
      }
    }
    if (s.norm === "steps") return null; // a diff changes its range every step: per layer
    let lo = 0;
    let hi = 0;
    for (const r of results) {
      if (!r.values) continue;
      const [a, b] = cellLimits(r.grid, r.values, { mode: "layer", p: s.pct, signed }).range;
      lo = Math.min(lo, a);
      hi = Math.max(hi, b);
    }
    return [lo, hi];
  }

  /** Display order of grid rows (sorted by norm or drift of the first run), or null. */
  async rowOrder(result) {
    const s = this.state;
    if (s.sort === "none" || !result || !result.grid || !result.grid.rowFilters) return null;
    if (s.sort === "drift") return result.drift ? orderBy(result.drift) : null;
    try {
      const stats = await this.stats(this.panels[0].run, s.tag);
      const at = stats.steps.find((x) => x.step === s.step);
      if (!at || !at.values) return null;
      const i = stats.names.indexOf("norm");
      // a capped view draws only the first filters
      return orderBy(at.values.slice(0, result.grid.rows).map((row) => (row[i] === null ? NaN : row[i])));
    } catch {
      return null;
    }
  }

  async loadPanel(panel, step) {
    const s = this.state;
    const runSteps = this.stepsByRun.get(panel.run) || [];
    if (stepIndex(runSteps, step) < 0) {
      return { error: `${panel.run} has no step ${step} of ${s.tag}`, kind: "info" };
    }
    const cap = panel.capFor(s.tag);
    let tensor;
    try {
      tensor = await this.cache.get(panel.run, s.tag, step, cap);
    } catch (e) {
      return { error: `${s.tag} at step ${step}: ${e.message}`, offer: cap ? null : this.offerFor(panel.run, e) };
    }
    if (String(tensor.step) !== String(step)) return { error: `the server sent step ${tensor.step} for step ${step}` };
    let grid;
    try {
      grid = canonicalize(tensor.header, { rgb: s.rgb, sample: s.sample });
    } catch (e) {
      return { error: `Cannot draw ${s.tag}: ${e.message}` };
    }
    const out = { tensor, grid, values: tensor.array, title: "", cap };
    // the first step, for drift (and the "− first step" view)
    const first = runSteps[0];
    const wantFirst = s.diff === "first" || (grid.kind === "kernel" && tensor.buffer.byteLength <= DRIFT_MAX_BYTES);
    if (wantFirst && first !== undefined) {
      try {
        const t0 = first === step ? tensor : await this.cache.get(panel.run, s.tag, first, cap);
        if (t0.array.length === tensor.array.length) {
          out.drift = grid.kind === "kernel" ? cosineDrift(grid, tensor.array, t0.array) : null;
          if (s.diff === "first") {
            out.values = difference(tensor.array, t0.array);
            out.title = `W(${step}) − W(${first})`;
            out.viewName = "diff-first";
          }
        } else if (s.diff === "first") {
          return { error: `the shape of ${s.tag} changed since step ${first}; no difference to show` };
        }
      } catch (e) {
        if (s.diff === "first") return { error: `first step ${first}: ${e.message}` };
      }
    }
    if (s.diff === "run") {
      const baseSteps = this.stepsByRun.get(s.base) || [];
      if (stepIndex(baseSteps, step) < 0) return { error: `${s.base} has no step ${step} of ${s.tag} to subtract`, kind: "info" };
      try {
        const b = await this.cache.get(s.base, s.tag, step, cap);
        out.values = difference(tensor.array, b.array);
        out.title = `${panel.run} − ${s.base} at step ${step}`;
        out.viewName = "diff-run";
      } catch (e) {
        return { error: `${s.base} at step ${step}: ${e.message}` };
      }
    }
    return out;
  }

  /** The view to offer after a 413 (the first filters that fit the limit), or null. */
  offerFor(run, error) {
    const body = error instanceof api.ApiError && error.status === 413 ? error.body : null;
    const axes = capAxes(this.info(run));
    if (!body || !axes || !(body.nbytes > 0) || !(body.limit_bytes > 0)) return null;
    const cap = fittingCap(body.nbytes, body.limit_bytes, axes.filters, axes.channels);
    return { tag: this.state.tag, ...cap, ...axes };
  }

  drawPanel(panel, result, fixed, order) {
    const s = this.state;
    if (result.error) {
      panel.setTitle("");
      panel.clear(result.error, result.kind || "error");
      if (result.offer) panel.offerCap(result.offer);
      return;
    }
    const { tensor, grid, values } = result;
    // "pattern"/"projection" images hold values in [0, 1]: drawn as they are (RGB or grey)
    const images = IMAGE_KINDS.includes(grid.kind) && s.diff === "none";
    const signed = !images && (isSigned(s.cmap) || s.diff !== "none");
    const cmap = images ? "grey" : s.diff !== "none" ? "diverging" : s.cmap;
    const limits = images
      ? cellLimits(grid, values, { mode: "steps", fixed: [0, 1] })
      : cellLimits(grid, values, { mode: s.norm, p: s.pct, signed, fixed });
    panel.loaded = { ...result, limits, cmap };
    const notes = [];
    if (s.diff !== "none" && s.cmap !== "diverging") notes.push("differences use the diverging colormap");
    if (s.sort !== "none" && !order) {
      notes.push(grid.rowFilters ? `no ${s.sort} to sort by at this step` : "sorting applies to kernel rows");
    }
    if (s.rgb && !grid.rgb && grid.kind === "kernel") notes.push("RGB needs 3 input channels");
    panel.setStatus(notes.join("; "));
    panel.setPartial(result.cap);
    panel.setTitle(result.title);
    panel.view.bg = this.dark ? [32, 33, 36] : [255, 255, 255];
    panel.view.sep = this.dark ? [72, 74, 78] : [200, 200, 200];
    panel.view.view.rowOrder = order;
    panel.view.set({
      grid,
      values,
      limits,
      table: lut(cmap, { dark: this.dark }),
      run: panel.run,
      tag: s.tag,
      step: String(tensor.step),
      mode: s.norm,
      viewName: result.viewName || "raw",
      zoom: s.zoom,
      // pattern/projection images are pictures: shown larger than kernel tiles when they fit
      maxTile: IMAGE_KINDS.includes(grid.kind) ? IMAGE_TILE : undefined,
    });
    this.drawColorbar(panel, limits, cmap, signed, images);
    this.markPanel(panel);
    this.highlightPanel(panel);
  }

  drawColorbar(panel, limits, cmap, signed, images = false) {
    const s = this.state;
    const table = lut(cmap, { dark: this.dark });
    const c = panel.colorbar;
    const ctx = c.getContext("2d");
    const img = ctx.createImageData(c.width, c.height);
    const n = table.length / 3;
    for (let x = 0; x < c.width; x++) {
      const i = Math.round((x / (c.width - 1)) * (n - 1)) * 3;
      for (let y = 0; y < c.height; y++) img.data.set([table[i], table[i + 1], table[i + 2], 255], (y * c.width + x) * 4);
    }
    ctx.putImageData(img, 0, 0);
    const [lo, hi] = limits.range;
    const perCell = s.norm === "tile" || s.norm === "filter";
    panel.barLabels.dataset.lo = String(lo);
    panel.barLabels.dataset.hi = String(hi);
    setChildren(
      panel.barLabels,
      el("span", { class: "bar-lo" }, perCell && !images ? "−limit" : fmt(lo)),
      el("span", {}, signed ? "0" : ""),
      el("span", { class: "bar-hi" }, perCell && !images ? "+limit" : fmt(hi)),
      el("span", { class: "bar-note" }, images
        ? "images as logged (0 black, 1 white; 3 channels as RGB); labels are filter indices"
        : perCell
          ? `${MODE_LABELS[s.norm]}, p${s.pct} (limits up to ${fmt(Math.max(Math.abs(lo), Math.abs(hi)))}; hover a tile)`
          : `${MODE_LABELS[s.norm]}, p${s.pct}`),
      el("span", { class: "bar-nan", title: "NaN / Inf values" }, "NaN/Inf"),
    );
  }

  redraw() {
    if (this.panels.length && this.state.step !== null && this.steps.length) this.showStep();
  }

  // ---- selection, detail, health ----

  clickCell(panel, hit) {
    const f = panel.loaded ? panel.loaded.grid.filterOf(hit.r, hit.c) : hit.r;
    this.select(f, false);
    this.detail.show(panel, f);
  }

  /** Selects filter `f` everywhere (grid outline, table row); `reveal` scrolls the grids to it. */
  select(f, reveal) {
    this.state.sel = f;
    this.writeHash();
    this.health.select(f);
    for (const p of this.panels) {
      this.highlightPanel(p);
      if (reveal && p.loaded) p.view.reveal(Math.floor(filterCells(p.loaded.grid, f)[0] / p.loaded.grid.cols));
    }
    if (reveal && this.panels[0] && this.panels[0].loaded) this.detail.show(this.panels[0], f);
  }

  highlightPanel(panel) {
    const f = this.state.sel;
    if (!panel.loaded || f === null || f >= filterCount(panel.loaded.grid)) {
      panel.view.setHighlight(null);
      return;
    }
    panel.view.setHighlight(filterCells(panel.loaded.grid, f));
  }

  async updateSide() {
    const s = this.state;
    const first = this.panels[0];
    this.healthBase = null;
    if (!first || !first.loaded) {
      this.health.update(null);
      return;
    }
    const { grid, drift } = first.loaded;
    if (IMAGE_KINDS.includes(grid.kind)) {
      this.health.update({ message: `${grid.kind === "pattern" ? "Patterns" : "Projections"} have no per-filter statistics: `
        + "hover an image for its filter's kernel and statistics." });
      if (this.detail.open) this.detail.refresh();
      return;
    }
    const token = this.token;
    let stats;
    try {
      stats = await this.stats(first.run, s.tag);
    } catch (e) {
      this.health.update({ message: `Statistics unavailable: ${e.message}` });
      return;
    }
    if (token !== this.token) return;
    const data = {
      stats,
      kind: grid.kind,
      step: s.step,
      drift: drift || null,
      label: (f) => grid.filterLabel(f),
    };
    this.healthBase = { token, data, run: first.run, loaded: first.loaded };
    this.health.selected = s.sel;
    this.applyHealthFlags();
    if (this.detail.open) this.detail.refresh();
  }

  // ---- the filter doctor ----

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
    const entries = this.panels.map((p) => this.findingsEntry(p.run));
    this.applyFindings(false);
    if (entries.every((e) => e.report || e.error)) return;
    await Promise.all(entries.map((e) => e.promise));
    this.applyFindings(true);
  }

  /** Shows the findings at hand; `arrived`: some just came in (the detail view lists them too). */
  applyFindings(arrived) {
    const s = this.state;
    this.doctor.update(this.panels.map((p) => {
      const e = this.findingsCache.get(p.run) || {};
      return { run: p.run, report: e.report || null, error: e.error || null };
    }), { run: s.run, tag: s.tag });
    for (const p of this.panels) this.markPanel(p);
    this.applyHealthFlags();
    if (arrived && this.detail.open) this.detail.refresh();
  }

  /** Badges on the panel's flagged tiles, its frozen banner and legend; labels on images. */
  markPanel(panel) {
    const loaded = panel.loaded;
    if (!loaded) return;
    const report = this.findingsReport(panel.run);
    const found = report ? seriesFindings(report.findings, panel.run, this.state.tag) : [];
    const badges = badgesFor(loaded.grid, found);
    panel.view.setMarks({ badges, labels: IMAGE_KINDS.includes(loaded.grid.kind) });
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
    if (!h || h.token !== this.token) return;
    const { data, loaded } = h;
    const n = filterCount(loaded.grid);
    const entry = this.findingsCache.get(h.run);
    if (entry && entry.report) {
      const per = findingsByFilter(loaded.grid, seriesFindings(entry.report.findings, h.run, this.state.tag), n);
      const flags = per.map((list) => list.map((f) => ({
        problem: f.problem,
        title: describeFinding(f) + (this.state.step < f.first_step ? ` (not yet at step ${this.state.step})` : ""),
        later: this.state.step < f.first_step,
      })));
      this.health.update({ ...data, flags, flagNote: "Flags: the filter doctor's findings over the whole run "
        + "(a faded flag was first seen after this step). Click one in the Filter doctor list to jump to it." });
      return;
    }
    if (!entry || !entry.error) {
      this.health.update({ ...data, flags: null, flagNote: "" });
      return;
    }
    this.clientFlags(h, entry.error);
  }

  /** Fallback flags when the findings route failed: this step's statistics (and tensor) only. */
  clientFlags(h, error) {
    const { data, loaded } = h;
    const at = data.stats.steps.find((x) => x.step === data.step);
    if (!at || !at.values) {
      this.health.update({ ...data, flags: [], flagNote: "" });
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
      this.health.update({ ...data, flags, flagNote: `The filter doctor did not answer (${error}); these flags are `
        + `computed in the browser from step ${data.step} alone${duplicates || data.kind !== "kernel" ? "" : " (near-duplicate check pending)"}.` });
    };
    show(null);
    if (data.kind !== "kernel") return;
    // near-duplicates are O(filters^2): computed after the table is on screen
    setTimeout(() => {
      if (h !== this.healthBase || h.token !== this.token) return;
      show(nearDuplicates(loaded.grid, loaded.tensor.array));
    }, 30);
  }

  /**
   * Shows a finding: its tag at its first step (or the nearest logged step
   * after it), its run, and its filter selected and opened; says which step.
   */
  async jumpTo(f) {
    let steps;
    try {
      steps = (await api.steps(f.run, f.tag)).map((x) => x.step);
    } catch (e) {
      this.doctor.setNote(`Cannot open ${f.tag} of ${f.run}: ${e.message}`);
      return;
    }
    const at = stepAtOrAfter(steps, f.first_step);
    if (!at) {
      this.doctor.setNote(`${f.tag} of ${f.run} has no steps to show.`);
      return;
    }
    if (this.playing) this.togglePlay();
    const s = this.state;
    const shown = f.run === s.run || (s.compare.includes(f.run) && this.info(f.run, f.tag).kind);
    if (!shown) s.run = f.run;
    if (s.tag !== f.tag) Object.assign(s, { sample: 0, zoom: null });
    Object.assign(s, { tag: f.tag, step: at.step, sel: null });
    this.doctor.active = f;
    this.detail.close();
    await this.loadTags(this.tags);
    const where = at.exact
      ? `step ${at.step}, where it was first seen`
      : at.after
        ? `step ${at.step}, the nearest logged step after step ${f.first_step} where it was first seen`
        : `step ${at.step}, the last logged step (none at or after step ${f.first_step}, where it was first seen)`;
    if (f.filter === null) {
      this.doctor.setNote(`${f.run} · ${f.tag}: the whole layer is ${f.problem}; showing ${where}.`);
      return;
    }
    const panel = this.panels.find((p) => p.run === f.run);
    const idx = panel && panel.loaded ? findingFilter(panel.loaded.grid, f) : -1;
    if (idx < 0) {
      this.doctor.setNote(`${f.run} · ${f.tag} at ${where}: filter ${f.filter} is not drawn.`);
      return;
    }
    this.select(idx, false);
    for (const p of this.panels) {
      if (p.loaded && idx < filterCount(p.loaded.grid)) p.view.reveal(Math.floor(filterCells(p.loaded.grid, idx)[0] / p.loaded.grid.cols));
    }
    this.detail.show(panel, idx);
    this.doctor.setNote(`${f.run} · ${f.tag} · filter ${f.filter} (${f.problem}) at ${where}.`);
  }

  /** Extra tooltip content: for pattern/projection images, their filter's kernel and stats. */
  hoverExtra(panel, hit, view) {
    if (!panel.loaded || !IMAGE_KINDS.includes(panel.loaded.grid.kind)) return null;
    return this.patternHover.nodes(panel, hit, view);
  }

  /** A panel's zoom/pan changed by the user: the other panels follow; a chosen zoom goes into the URL. */
  syncView(source, view) {
    const zoom = source.view.userZoom;
    for (const p of this.panels) {
      if (p !== source && p.view.data) p.view.setView({ zoom: view.zoom, panX: view.panX, panY: view.panY }, zoom);
    }
    if (this.state.zoom !== zoom) {
      this.state.zoom = zoom;
      this.writeHash();
    }
  }
}
