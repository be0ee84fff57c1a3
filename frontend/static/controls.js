// The dashboard's controls: the toolbars built once, filled from the tags and
// the state; messages, the loading note and the empty page.

import { COLORMAPS } from "./colormap.js";
import { el, fillSelect, refill } from "./dom.js";
import { MODE_LABELS, MODES } from "./normalize.js";

function label(text, control, extra = {}) {
  return el("label", { class: "ctl", ...extra }, el("span", { class: "ctl-label" }, text), control);
}

/**
 * Composed by the Dashboard (app.js) as `dashboard.controls`: the toolbars, the
 * message line, the loading note and the node the panels go in, built into
 * `root` with the `side` nodes beside the panels. Its interface, `host`:
 * state() -> the URL state (read only); tags() -> {run: {tag: info}};
 * info() -> the chosen tag's metadata; change(patch) (a control changed the
 * state); slide() (the slider moved); nudge(delta); togglePlay(); reload();
 * copyLink(). Its elements are fields (run, tag, slider, ...).
 */
export class Controls {
  constructor(root, side, host) {
    this.host = host;
    const c = this;
    c.run = el("select", { id: "run-select", onchange: () => host.change({ run: c.run.value, step: null, sel: null }) });
    c.tag = el("select", { id: "tag-select", onchange: () => host.change({ tag: c.tag.value, step: null, sel: null, sample: 0, zoom: null }) });
    c.compareList = el("div", { id: "compare-runs", class: "compare-list" });
    c.compare = el("details", { id: "compare", class: "compare" }, el("summary", {}, "Compare runs"), c.compareList);
    c.slider = el("input", { type: "range", id: "step-slider", min: "0", max: "0", value: "0", "aria-label": "Step", oninput: () => host.slide() });
    c.stepLabel = el("output", { id: "step-label", class: "step-label" });
    c.play = el("button", { type: "button", id: "play", title: "Play / pause through the steps", onclick: () => host.togglePlay() }, "▶");
    c.prev = el("button", { type: "button", id: "prev-step", title: "Previous step ([)", onclick: () => host.nudge(-1) }, "‹");
    c.next = el("button", { type: "button", id: "next-step", title: "Next step (])", onclick: () => host.nudge(1) }, "›");
    c.cmap = fillSelect(el("select", { id: "cmap-select", onchange: () => host.change({ cmap: c.cmap.value }) }), COLORMAPS);
    c.norm = fillSelect(
      el("select", { id: "norm-select", onchange: () => host.change({ norm: c.norm.value }) }),
      MODES.map((m) => [m, MODE_LABELS[m]]),
    );
    c.pct = el("input", {
      type: "number", id: "pct-input", min: "50", max: "100", step: "0.1",
      title: "Colour limits from this percentile of |value| (symmetric), so one outlier does not wash out the rest",
      onchange: () => {
        const v = Number(c.pct.value);
        if (v >= 50 && v <= 100) host.change({ pct: v });
      },
    });
    // "examples" is the grid as logged, with each filter's dataset examples beside it
    const show = (v) => (v === "examples" ? { diff: "none", examples: true } : { diff: v, examples: false });
    c.diff = fillSelect(el("select", { id: "diff-select", onchange: () => host.change(show(c.diff.value)) }), [
      ["none", "weights"], ["first", "− first step"], ["run", "− another run"], ["examples", "examples"],
    ]);
    c.base = el("select", { id: "base-select", onchange: () => host.change({ base: c.base.value }) });
    c.baseLabel = label("base run", c.base, { hidden: true, title: "Subtracted by \"− another run\"; the run that \"Align\" reorders the others to" });
    c.align = el("input", {
      type: "checkbox",
      id: "align-toggle",
      // the base is the chosen run unless one was picked for "− another run" (comparing.js)
      onchange: () => host.change({ align: c.align.checked, ...(c.align.checked && host.state().diff !== "run" ? { base: host.state().run } : {}) }),
    });
    c.alignText = el("span", { class: "ctl-label" }, "Align");
    c.alignLabel = el("label", { class: "ctl", hidden: true, title: "Reorder each compared run's filters (and chained input channels) to match the base run's" }, c.alignText, c.align);
    c.sort = fillSelect(el("select", { id: "sort-select", onchange: () => host.change({ sort: c.sort.value }) }), [
      ["none", "index"], ["norm", "norm"], ["drift", "drift"],
    ]);
    c.rgb = el("input", { type: "checkbox", id: "rgb-toggle", onchange: () => host.change({ rgb: c.rgb.checked }) });
    c.rgbLabel = label("RGB", c.rgb, { hidden: true, title: "Draw each 3-channel filter as one colour tile" });
    c.sample = el("input", { type: "number", id: "sample-input", min: "0", value: "0", onchange: () => host.change({ sample: Math.max(0, Number(c.sample.value) || 0) }) });
    c.sampleLabel = label("Sample", c.sample, { hidden: true });
    c.reload = el("button", { type: "button", id: "reload", title: "Reload runs, tags and steps (also every 30 s)", onclick: () => host.reload() }, "⟳ Reload");
    c.copy = el("button", { type: "button", id: "copy-link", title: "Copy a link to this view", onclick: () => host.copyLink() }, "Copy link");
    c.link = el("input", { type: "text", id: "share-link", readonly: true, hidden: true });
    c.description = el("div", { class: "description", id: "tag-description" });
    this.message = el("div", { class: "message", id: "message", role: "alert", hidden: true });
    this.loading = el("span", { class: "loading", id: "loading", hidden: true }, "loading…");
    this.tools = el("span", { class: "tools", id: "tools" });
    this.panelsNode = el("div", { class: "panels", id: "panels" });
    this.side = el("aside", { class: "side", id: "side" }, ...side);
    root.classList.add("convfilters");
    root.replaceChildren(el("div", { class: "app" },
      el("div", { class: "toolbar" },
        label("Run", c.run), label("Tag", c.tag), c.compare, c.reload, c.copy, c.link, this.tools, this.loading),
      el("div", { class: "toolbar" },
        el("span", { class: "step-box" }, c.prev, c.play, c.next, label("Step", c.slider), c.stepLabel),
        label("Colormap", c.cmap), label("Scale", c.norm), label("Percentile", c.pct),
        label("Show", c.diff), c.baseLabel, c.alignLabel, label("Sort rows", c.sort), c.rgbLabel, c.sampleLabel),
      c.description, this.message,
      el("div", { class: "main" }, this.panelsNode, this.side)));
    root.addEventListener("keydown", (e) => {
      if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
      if (e.target instanceof HTMLCanvasElement) return;
      if (e.key === "[") host.nudge(-1);
      if (e.key === "]") host.nudge(1);
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

  /** Fills the controls from the runs, the chosen run's tag names and the state. */
  fill(runs, tagNames) {
    const host = this.host;
    const s = host.state();
    const tags = host.tags();
    const c = this;
    fillSelect(c.run, runs, s.run);
    const byKind = {};
    for (const t of tagNames) (byKind[tags[s.run][t].kind] ||= []).push(t);
    refill(c.tag, JSON.stringify(byKind), () => Object.entries(byKind).map(([kind, list]) =>
      el("optgroup", { label: `${kind}s` }, ...list.map((t) => el("option", { value: t }, t)))));
    c.tag.value = s.tag;
    const others = runs.filter((r) => r !== s.run);
    const compareKey = JSON.stringify([others, s.compare, others.map((r) => (tags[r][s.tag] ? "" : s.tag))]);
    refill(c.compareList, compareKey, () => (others.length ? others : [null]).map((r) => {
      if (r === null) return el("span", { class: "dim" }, "only one run");
      const has = Boolean(tags[r][s.tag]);
      return el("label", { class: "compare-run", title: has ? "" : `no ${s.tag} in this run` },
        el("input", {
          type: "checkbox", dataset: { run: r }, checked: s.compare.includes(r), disabled: !has,
          onchange: (e) => {
            const set = new Set(host.state().compare);
            if (e.target.checked) set.add(r);
            else set.delete(r);
            host.change({ compare: runs.filter((x) => set.has(x)) });
          },
        }), el("span", {}, r));
    }));
    c.compare.querySelector("summary").textContent = s.compare.length ? `Compare runs (${s.compare.length + 1})` : "Compare runs";
    fillSelect(c.base, runs, s.base);
    c.cmap.value = s.cmap;
    c.norm.value = s.norm;
    c.pct.value = String(s.pct);
    c.diff.value = s.examples ? "examples" : s.diff;
    c.sort.value = s.sort;
    c.rgb.checked = s.rgb;
    c.sample.value = String(s.sample);
    c.align.checked = s.align;
    c.alignText.textContent = `Align to ${s.base}`;
    c.alignLabel.hidden = !(s.compare.length && host.info().kind === "kernel");
    c.baseLabel.hidden = s.diff !== "run" && !(s.align && !c.alignLabel.hidden);
    const info = host.info();
    c.description.textContent = info.description || "";
    const shape = info.shape || [];
    c.rgbLabel.hidden = !(info.kind === "kernel" && !String(info.layout).includes("M")
      && ((shape[String(info.layout).indexOf("I")] === 3) || (info.image_shape && info.image_shape[2] === 3)));
    c.sampleLabel.hidden = info.kind !== "activation";
    if (info.kind === "activation") c.sample.max = String(Math.max(0, (shape[0] || 1) - 1));
  }

  /** The page shown when no run has logged anything. */
  showEmpty() {
    this.panelsNode.replaceChildren(
      el("div", { class: "empty", id: "empty" },
        el("h2", {}, "No filters logged yet — see README"),
        el("p", {}, "Log kernels or activations with tb_convfilters (the Keras callback, the PyTorch hook, "
          + "tb_convfilters.Writer or the summary ops) into this logdir; the README shows how. "
          + "This page checks for new data every 30 s; press Reload to check now.")),
    );
    fillSelect(this.run, []);
    refill(this.tag, "[]", () => []);
    this.stepLabel.textContent = "";
  }

  /** Shows the panels' nodes. */
  setPanels(nodes) {
    const shown = this.panelsNode.children;
    // the same panels: left in place (taken out and put back, they are laid out and painted again)
    if (nodes.length !== shown.length || nodes.some((n, i) => shown[i] !== n)) this.panelsNode.replaceChildren(...nodes);
    this.panelsNode.dataset.count = String(nodes.length);
  }

  /** Adds a view's node (e.g. the video export) to the first toolbar. */
  addTool(node) {
    this.tools.append(node);
  }

  /** The step slider over `count` steps, at step `index`. */
  setSteps(count, index) {
    this.slider.max = String(Math.max(0, count - 1));
    this.slider.disabled = count < 2;
    this.slider.value = String(index);
  }

  /** The step index the slider is at. */
  stepPosition() {
    return Number(this.slider.value);
  }

  setStepPosition(i) {
    this.slider.value = String(i);
  }

  setStepLabel(text) {
    this.stepLabel.textContent = text;
  }

  setPlaying(on) {
    this.play.textContent = on ? "❚❚" : "▶";
  }

  /** Shows `link` selected in a text box and copies it to the clipboard if allowed. */
  async showLink(link) {
    this.link.value = link;
    this.link.hidden = false;
    this.link.select();
    try {
      await navigator.clipboard.writeText(link);
      this.copy.textContent = "Copied";
    } catch {
      this.copy.textContent = "Copy the link";
    }
    setTimeout(() => { this.copy.textContent = "Copy link"; }, 2000);
  }
}
