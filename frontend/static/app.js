// The Filters dashboard: controls, one grid panel per compared run (sharing
// one step slider), the filter doctor's findings (badges, list, health flags),
// the health table and the detail view. The state lives in the URL hash
// (state.js), mirrored into TensorBoard's page URL.

import { alignTensor } from "./align.js";
import { cosineDrift, difference, orderBy } from "./analysis.js";
import * as api from "./api.js";
import { TensorCache } from "./cache.js";
import { isSigned, lut } from "./colormap.js";
import { Comparing } from "./comparing.js";
import { Controls } from "./controls.js";
import { DetailView } from "./detail.js";
import { DoctorView } from "./doctorview.js";
import { el, fmt, setChildren } from "./dom.js";
import { HealthTable } from "./health.js";
import { canonicalize, IMAGE_KINDS } from "./layout.js";
import { cellLimits, limitsFromStats, MODE_LABELS } from "./normalize.js";
import { Panel, capAxes, fittingCap } from "./panel.js";
import { PatternHover } from "./patterns.js";
import { Selection } from "./selection.js";
import { SimilarityView } from "./similarity.js";
import { decode, encode, stepIndex, unionSteps } from "./state.js";
import { Triage } from "./triage.js";

const POLL_MS = 30000;
const PLAY_MS = 700;
const CACHE_BYTES = 384 * 1024 * 1024;
// drift needs the first step's tensor too: only fetched for tensors up to this size
const DRIFT_MAX_BYTES = 64 * 1024 * 1024;
const PARENT_KEY = "cf";
const IMAGE_TILE = 192;

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
    this.matches = new Map(); // align route answers by [run, base, tag, step] (comparing.js)
    this.similarity = new SimilarityView(this);
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
    this.matches.clear();
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

  info(run = this.state.run, tag = this.state.tag) {
    return (this.tags[run] && this.tags[run][tag]) || {};
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
    const runs = [...new Set([...this.shownRuns(), ...(s.diff === "run" || s.align ? [s.base] : [])])];
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
    if (["run", "tag", "compare", "diff", "base", "align"].some((k) => k in patch)) {
      if ("run" in patch || "tag" in patch) this.detail.close();
      this.loadTags(this.tags);
    } else {
      this.showStep();
    }
  }

  /**
   * The `stats` reply of a series (steps spread over it when it has more than the
   * route returns), with `step` in it when the series has that step: a capped reply
   * lacking it gets that one step fetched and merged in.
   */
  async stats(run, tag, step) {
    const key = JSON.stringify([run, tag]);
    if (!this.statsCache.has(key)) {
      const p = api.stats(run, tag);
      p.catch(() => this.statsCache.delete(key));
      this.statsCache.set(key, p);
    }
    const reply = await this.statsCache.get(key);
    if (step === undefined || step === null || !reply.capped) return reply;
    if (reply.steps.some((s) => s.step === step)) return reply;
    let one;
    try {
      one = await api.stats(run, tag, {}, { maxSteps: 1, step });
    } catch {
      return reply; // e.g. a step this series does not have: callers find no row
    }
    if (!reply.steps.some((s) => s.step === step)) {
      reply.steps.push(...one.steps);
      reply.steps.sort((a, b) => a.step - b.step);
    }
    return reply;
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
    this.similarity.update();
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
      const stats = await this.stats(this.panels[0].run, s.tag, s.step);
      const at = stats.steps.find((x) => x.step === s.step);
      if (!at || !at.values) return null;
      const i = stats.names.indexOf("norm");
      // a capped view draws only the first filters; an aligned one in the base run's order
      const perm = result.tensor.match ? result.tensor.match.permutation : null;
      const rows = Array.from({ length: result.grid.rows }, (_, r) => at.values[perm ? perm[r] : r]);
      return orderBy(rows.map((row) => (!row || row[i] === null ? NaN : row[i])));
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
    let match = null;
    if (this.aligning(panel.run)) {
      try {
        match = await this.match(panel.run, step);
        tensor = alignTensor(tensor, match);
      } catch (e) {
        return { error: `Align ${panel.run} to ${s.base} at step ${step}: ${e.message}` };
      }
    }
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
        let t0 = first === step ? tensor : await this.cache.get(panel.run, s.tag, first, cap);
        if (match && t0 !== tensor) t0 = alignTensor(t0, match);
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
    panel.setTitle(tensor.match ? this.alignTitle(result.title, tensor.match) : result.title);
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

}

/** Adds the methods of `parts` (classes holding parts of Dashboard, by concern) to Dashboard. */
function mixin(target, ...parts) {
  for (const part of parts) {
    for (const name of Object.getOwnPropertyNames(part.prototype)) {
      if (name !== "constructor") Object.defineProperty(target.prototype, name, Object.getOwnPropertyDescriptor(part.prototype, name));
    }
  }
}

mixin(Dashboard, Controls, Selection, Triage, Comparing);
