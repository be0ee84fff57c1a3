// The Filters dashboard: controls, one grid panel per compared run (sharing
// one step slider), the filter doctor's findings (badges, list, health flags),
// the health table and the detail view. The state lives in the URL hash
// (state.js), mirrored into TensorBoard's page URL (page.js).
//
// The Dashboard holds the state and the data flow (tags -> steps -> tensors ->
// drawing) and composes the parts, each given a small interface (documented at
// the top of its class): Controls (controls.js), StepLoader (loader.js),
// Selection (selection.js), Triage (triage.js), Comparing (comparing.js),
// VideoExport (videoexport.js), the Panels (panel.js), ShownExamples
// (examplesshown.js) and the Prefetcher (prefetch.js). The grid is drawn first;
// the side views follow once it is painted.

import * as api from "./api.js";
import { TensorCache } from "./cache.js";
import { isSigned, lut } from "./colormap.js";
import { Comparing } from "./comparing.js";
import { Controls } from "./controls.js";
import { DetailView } from "./detail.js";
import { DoctorView } from "./doctorview.js";
import { DynamicsView } from "./dynview.js";
import { ShownExamples } from "./examplesshown.js";
import { afterPaint } from "./dom.js";
import { HealthTable } from "./health.js";
import { mark } from "./marks.js";
import { IMAGE_KINDS } from "./layout.js";
import { StepLoader } from "./loader.js";
import { cellLimits } from "./normalize.js";
import * as page from "./page.js";
import { Panel } from "./panel.js";
import { PREFETCH_BYTES, Prefetcher } from "./prefetch.js";
import { PatternHover } from "./patterns.js";
import { Selection } from "./selection.js";
import { SimilarityView } from "./similarity.js";
import { SpectraView } from "./spectraview.js";
import { decode, encode, stepIndex, unionSteps } from "./state.js";
import { Triage } from "./triage.js";
import { VideoExport } from "./videoexport.js";

const POLL_MS = 30000;
const INDEXING_POLL_MS = 300; // while the server's first index build runs
const PLAY_MS = 700;
const CACHE_BYTES = 384 * 1024 * 1024;
const IMAGE_TILE = 192;

export class Dashboard {
  constructor(root) {
    this.root = root;
    this.state = decode(page.initialHash());
    this.tags = {};
    this.steps = [];
    this.stepsByRun = new Map();
    this.cache = new TensorCache(CACHE_BYTES, { prefetchLimit: PREFETCH_BYTES });
    this.panels = [];
    this.token = 0; // the latest showStep call
    this.stepsSeq = 0; // the latest loadSteps call
    this.playing = null;
    this.dark = false;
    const state = () => this.state;
    const info = (run, tag) => this.info(run, tag);
    const panels = () => this.panels;
    const writeHash = () => this.writeHash();
    // the views beside the grids (DetailView, PatternHover, SimilarityView, SpectraView, DynamicsView read the dashboard)
    this.health = new HealthTable({ onSelect: (f) => this.selection.select(f, true) });
    this.detail = new DetailView(this);
    this.examples = new ShownExamples(this);
    this.doctor = new DoctorView({ onJump: (f) => this.triage.jumpTo(f) });
    this.patternHover = new PatternHover(this);
    this.similarity = new SimilarityView(this);
    this.spectra = new SpectraView(this);
    this.dynamics = new DynamicsView(this);
    this.comparing = new Comparing({ state, info });
    this.loader = new StepLoader({
      cache: this.cache,
      state,
      info,
      stepsOf: (run) => this.stepsByRun.get(run) || [],
      firstPanel: () => this.panels[0],
      comparing: this.comparing,
      showMessage: (text) => this.controls.showMessage(text),
    });
    this.selection = new Selection({ state, panels, writeHash, detail: this.detail, health: this.health });
    this.triage = new Triage({
      state,
      panels,
      token: () => this.token,
      info,
      stats: (run, tag, step) => this.loader.stats(run, tag, step),
      drift: (run, step, loaded) => this.loader.drift(run, step, loaded),
      select: (f, reveal) => this.selection.select(f, reveal),
      stopPlaying: () => {
        if (this.playing) this.togglePlay();
      },
      showState: () => this.loadTags(this.tags),
      health: this.health,
      detail: this.detail,
      doctor: this.doctor,
    });
    this.panelHost = {
      clickCell: (panel, hit) => this.selection.clickCell(panel, hit),
      syncView: (panel, view) => this.selection.syncView(panel, view),
      gridHeight: () => this.controls.gridHeight(),
      hoverExtra: (panel, hit, view) => this.hoverExtra(panel, hit, view),
      showStep: () => this.showStep(),
      tag: () => this.state.tag,
      gridDrawn: (panel) => {
        mark("grid", { tag: panel.view.data.tag, step: panel.view.data.step });
        if (panel.examples) panel.examples.place(panel.view);
      },
    };
    const side = [this.detail.node, this.spectra.node, this.dynamics.node, this.similarity.node, this.doctor.node, this.health.node];
    this.controls = new Controls(root, side, {
      state,
      tags: () => this.tags,
      info: () => this.info(),
      change: (patch) => this.change(patch),
      slide: () => this.slide(),
      nudge: (delta) => this.nudge(delta),
      togglePlay: () => this.togglePlay(),
      reload: () => this.reload(),
      copyLink: () => this.copyLink(),
    });
    this.videoExport = new VideoExport({
      state,
      info,
      stepsOf: (run) => this.stepsByRun.get(run) || [],
      load: (step) => this.loader.loadPanel(this.panels[0], step),
      stats: (run, tag) => this.loader.stats(run, tag),
      dark: () => this.dark,
    });
    this.controls.addTool(this.videoExport.node);
    this.prefetcher = new Prefetcher(this);
  }

  // ---- URL state ----

  writeHash() {
    page.writeHash(this.state);
  }

  async copyLink() {
    this.writeHash();
    await this.controls.showLink(page.shareLink());
  }

  // ---- lifecycle ----

  /** `tags`: a promise of the first `tags` answer (index.js asks it before the modules load), or null. */
  async start(tags = null) {
    page.watchTheme((dark) => this.setTheme(dark));
    page.watchHash(() => this.follow(location.hash), () => this.follow(page.parentState()));
    let resize = null;
    window.addEventListener("resize", () => {
      clearTimeout(resize);
      resize = setTimeout(() => this.panels.forEach((p) => p.view.draw()), 100);
    });
    this.pollTimer = setInterval(() => this.poll(), POLL_MS);
    let first = null;
    try {
      first = await api.tagsAnswer(tags);
    } catch (e) {
      this.controls.showMessage(`Could not list tags: ${e.message}`);
      return;
    }
    this.pollIndexing(first.indexing);
    await this.loadTags(first.tags);
  }

  /** While the server is still indexing, asks `tags` again soon: runs indexed since show up without a reload. */
  pollIndexing(indexing) {
    clearTimeout(this.indexTimer);
    if (indexing) this.indexTimer = setTimeout(() => this.poll(), INDEXING_POLL_MS);
  }

  /** Shows the state in `hash` (the iframe's own, or TensorBoard's page's: null if none) when it differs. */
  async follow(hash) {
    if (hash === null) return;
    const next = decode(hash);
    if (encode(next) === encode(this.state)) return;
    this.state = next;
    await this.loadTags(this.tags);
  }

  setTheme(dark) {
    if (dark === this.dark && this.themeSet) return;
    this.themeSet = true;
    this.dark = dark;
    this.root.classList.toggle("dark", dark);
    this.root.dataset.theme = dark ? "dark" : "light";
    this.redraw();
  }

  /** Forgets the tensors and statistics fetched (a cold start for the next tag; the benchmark's). */
  forget() {
    this.prefetcher.cancel();
    this.cache.clear();
    this.loader.clearStats();
    this.loader.clearSteps();
  }

  async reload() {
    this.forget();
    this.comparing.clear();
    this.triage.clearFindings();
    this.patternHover.clear();
    this.spectra.clear();
    this.dynamics.clear();
    this.tags = {};
    await this.loadTags();
  }

  async poll() {
    try {
      const { tags, indexing } = await api.tagsAnswer();
      this.pollIndexing(indexing);
      if (JSON.stringify(tags) !== JSON.stringify(this.tags)) {
        this.triage.clearFindings();
        await this.loadTags(tags);
        return;
      }
      const before = this.steps.length;
      await this.loadSteps(false, true);
      if (this.steps.length !== before) {
        this.loader.clearStats();
        this.triage.clearFindings();
        this.triage.updateSide();
        this.triage.updateFindings();
      }
    } catch (e) {
      this.controls.showMessage(`Checking for new data failed: ${e.message}`);
    }
  }

  // ---- data flow: tags -> steps -> tensors ----

  async loadTags(prefetched = null) {
    try {
      this.tags = prefetched && Object.keys(prefetched).length ? prefetched : await api.tags();
      mark("tags");
    } catch (e) {
      this.controls.showMessage(`Could not list tags: ${e.message}`);
      return;
    }
    const runs = Object.keys(this.tags).sort();
    if (!runs.length) {
      this.showEmpty();
      return;
    }
    this.root.classList.remove("is-empty");
    this.controls.showMessage("");
    const s = this.state;
    if (!runs.includes(s.run)) s.run = runs.find((r) => s.tag !== null && this.tags[r][s.tag]) || runs[0];
    const tagNames = Object.keys(this.tags[s.run]).sort();
    if (!tagNames.includes(s.tag)) {
      s.tag = tagNames.find((t) => this.tags[s.run][t].kind === "kernel") || tagNames[0];
    }
    s.compare = [...new Set(s.compare)].filter((r) => r !== s.run && this.tags[r]);
    if (s.base === null || !this.tags[s.base]) s.base = runs.find((r) => r !== s.run) || s.run;
    this.controls.fill(runs, tagNames);
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
    this.panels = runs.map((r) => old.get(r) || this.newPanel(r));
    this.controls.setPanels(this.panels.map((p) => p.node));
  }

  newPanel(run) {
    const panel = new Panel(run, this.panelHost);
    panel.examples = this.examples.strips(panel);
    panel.body.append(panel.examples.node);
    return panel;
  }

  /** The detail view's examples of its filter (detail.js asks when it opens one). */
  showExampleDetail() {
    this.examples.showDetail();
  }

  /** The runs whose steps are listed: those shown, and the base of a difference or alignment. */
  listedRuns() {
    const s = this.state;
    return [...new Set([...this.shownRuns(), ...(s.diff === "run" || s.align ? [s.base] : [])])];
  }

  /** Asks for the shown tag's steps listings and the tensors of the step it opens at (its last one), in parallel. */
  startFetches() {
    const s = this.state;
    this.loader.warm(this.panels, s.step ?? this.info().max_step);
    for (const r of this.listedRuns()) if (this.info(r, s.tag).kind) this.loader.steps(r, s.tag).catch(() => {});
  }

  /** Lists the shown tag's steps (`refresh`: asked again, else as listed before) and shows the step (`show`: even if unchanged). */
  async loadSteps(show, refresh = false) {
    const s = this.state;
    // the tensor the step will show is fetched while the steps are listed
    if (show) this.startFetches();
    const runs = this.listedRuns();
    // A newer selection may start another listing while this one waits: drop stale answers.
    const seq = ++this.stepsSeq;
    let lists;
    try {
      lists = await Promise.all(runs.map((r) => (this.info(r, s.tag).kind ? this.loader.steps(r, s.tag, refresh) : [])));
    } catch (e) {
      if (seq === this.stepsSeq) this.controls.showMessage(`Could not list the steps of ${s.tag}: ${e.message}`);
      return;
    }
    if (seq !== this.stepsSeq) return;
    mark("steps", { tag: s.tag });
    runs.forEach((r, i) => this.stepsByRun.set(r, lists[i].map((d) => d.step)));
    this.steps = unionSteps(this.shownRuns().map((r) => this.stepsByRun.get(r) || []));
    let i = s.step === null ? -1 : stepIndex(this.steps, s.step);
    if (i < 0) i = this.steps.length - 1;
    this.controls.setSteps(this.steps.length, i);
    if (show || s.step !== this.steps[i]) {
      s.step = this.steps.length ? this.steps[i] : null;
      await this.showStep();
    } else {
      this.updateStepLabel();
    }
  }

  updateStepLabel() {
    const i = this.controls.stepPosition();
    this.controls.setStepLabel(this.steps.length
      ? `${this.state.step} (${i + 1}/${this.steps.length})`
      : "no steps");
  }

  slide() {
    mark("switch", { step: "slider" });
    const i = this.controls.stepPosition();
    if (this.steps[i] === undefined) return;
    this.state.step = this.steps[i];
    this.showStep();
  }

  nudge(delta) {
    const i = Math.min(this.steps.length - 1, Math.max(0, this.controls.stepPosition() + delta));
    this.controls.setStepPosition(i);
    this.slide();
  }

  togglePlay() {
    if (this.playing) {
      clearTimeout(this.playing);
      this.playing = null;
      this.controls.setPlaying(false);
      return;
    }
    this.controls.setPlaying(true);
    const tick = async () => {
      let i = this.controls.stepPosition() + 1;
      if (i >= this.steps.length) i = 0;
      this.controls.setStepPosition(i);
      this.state.step = this.steps[i];
      await this.showStep();
      if (this.playing) this.playing = setTimeout(tick, PLAY_MS);
    };
    this.playing = setTimeout(tick, 0);
  }

  change(patch) {
    mark("switch", { ...patch });
    Object.assign(this.state, patch);
    // a new tag's steps listing and tensor are asked for before any DOM work; what was
    // on its way ahead for the tag shown before gives way to them
    if ("tag" in patch && !("run" in patch)) this.startFetches();
    if ("tag" in patch || "run" in patch) this.cache.abortAhead();
    if (["run", "tag", "compare", "diff", "base", "align"].some((k) => k in patch)) {
      if ("run" in patch || "tag" in patch) this.detail.close();
      this.loadTags(this.tags);
    } else {
      this.showStep();
    }
  }

  /** Loads every panel's tensor at the current step, then draws them together. */
  async showStep() {
    const s = this.state;
    const token = ++this.token;
    this.prefetcher.cancel();
    this.updateStepLabel();
    const step = s.step;
    if (step === null || step === undefined) {
      this.writeHash();
      this.panels.forEach((p) => p.clear("No steps logged for this tag yet."));
      return;
    }
    const timer = setTimeout(() => this.controls.setLoading(true, `loading step ${step}…`), 150);
    let results;
    try {
      results = await Promise.all(this.panels.map((p) => this.loader.loadPanel(p, step)));
    } finally {
      clearTimeout(timer);
      if (token === this.token) this.controls.setLoading(false);
    }
    if (token !== this.token) return;
    mark("loaded", { tag: s.tag, step: String(step) });
    const signed = isSigned(s.cmap);
    const fixed = await this.loader.fixedLimits(results, this.panels.map((p) => p.run), signed);
    if (token !== this.token) return;
    const order = await this.loader.rowOrder(results[0], this.panels.length ? this.panels[0].run : null);
    if (token !== this.token) return;
    mark("limits", { tag: s.tag, step: String(step) });
    this.panels.forEach((p, i) => this.drawPanel(p, results[i], fixed, order));
    // the grid first: the side views (health table, findings, examples, spectra) once it is painted
    await afterPaint();
    if (token !== this.token) return;
    this.writeHash(); // the page's URL (history.replaceState of TensorBoard's page: ~4 ms) once the grid is up
    this.examples.show(results);
    this.triage.updateSide();
    this.triage.updateFindings();
    this.similarity.update();
    this.spectra.update();
    this.dynamics.update();
    this.prefetcher.schedule();
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
    if (s.examples && !this.examples.source(panel.run)) {
      notes.push(`no dataset examples: neither ${s.tag} nor its layer's activation has them in this run (log them with Writer.activation(..., inputs=x))`);
    }
    panel.setStatus(notes.join("; "));
    panel.setPartial(result.cap);
    panel.setTitle(tensor.match ? this.comparing.alignTitle(result.title, tensor.match) : result.title);
    panel.view.bg = this.dark ? [32, 33, 36] : [255, 255, 255];
    panel.view.sep = this.dark ? [72, 74, 78] : [200, 200, 200];
    panel.view.view.rowOrder = order;
    this.examples.fitBeside(panel);
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
    panel.drawScale(lut(cmap, { dark: this.dark }), limits.range, s, { signed, images });
    this.triage.markPanel(panel);
    this.selection.highlightPanel(panel);
  }

  /** Extra tooltip content: an aligned tile's match (comparing.js); for pattern/projection images, their filter's kernel and stats. */
  hoverExtra(panel, hit, view) {
    const aligned = this.comparing.alignHover(panel, hit);
    if (aligned) return aligned;
    if (!panel.loaded || !IMAGE_KINDS.includes(panel.loaded.grid.kind)) return null;
    return this.patternHover.nodes(panel, hit, view);
  }

  showEmpty() {
    this.panels = [];
    this.root.classList.add("is-empty");
    this.controls.showEmpty();
    this.health.update(null);
    this.doctor.update([]);
    this.detail.close();
  }

  redraw() {
    if (this.panels.length && this.state.step !== null && this.steps.length) this.showStep();
  }
}
