// One grid panel of the dashboard: a run's tensor (or a difference) at the
// shared step, with its colour bar, banners, status and downloads; and the
// smaller view to offer when a tensor is over the server's size limit.

import { chip, legend } from "./doctorview.js";
import { el, setChildren } from "./dom.js";
import { describeFinding } from "./findings.js";
import { GridView } from "./gridview.js";
import { IMAGE_KINDS } from "./layout.js";

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
export function capAxes(info) {
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

/** One grid: a run's tensor (or a diff) at the shared step. */
export class Panel {
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
