// One grid panel of the dashboard: a run's tensor (or a difference) at the
// shared step, with its colour bar, banners, status and downloads; and the
// smaller view to offer when a tensor is over the server's size limit.

import { chip, legend } from "./doctorview.js";
import { el, fmt, setChildren } from "./dom.js";
import { describeFinding } from "./findings.js";
import { GridView } from "./gridview.js";
import { IMAGE_KINDS } from "./layout.js";
import { MODE_LABELS } from "./normalize.js";

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

/**
 * One grid: a run's tensor (or a diff) at the shared step. Made by the
 * Dashboard (app.js); its interface, `host`: clickCell(panel, hit);
 * syncView(panel, view) (the user zoomed or panned); gridHeight() -> css px;
 * hoverExtra(panel, hit, view) -> tooltip nodes or null; showStep() (draw the
 * step again, e.g. with a smaller view); tag() -> the shown tag; gridDrawn(panel)
 * (after every draw of the grid). `body` holds the grid; what goes right of it is
 * appended there.
 */
export class Panel {
  constructor(run, host) {
    this.host = host;
    this.run = run;
    this.view = new GridView({
      className: "main-grid",
      onClick: (hit) => host.clickCell(this, hit),
      onView: (view) => host.syncView(this, view),
      maxHeight: () => host.gridHeight(),
      hoverExtra: (hit, view) => host.hoverExtra(this, hit, view),
      onDrawn: () => host.gridDrawn(this),
    });
    this.body = el("div", { class: "panel-body" }, this.view.node);
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
      this.body,
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
        this.host.showStep();
      },
    }, text));
  }

  /**
   * Draws the colour bar of `table` (colormap.lut) and its labels: the limits
   * `range`, or "±limit" when each tile or filter has its own (`perCell`);
   * `note` says how the colours were scaled.
   */
  drawColorbar(table, [lo, hi], { signed, perCell, note }) {
    const c = this.colorbar;
    const ctx = c.getContext("2d");
    const img = ctx.createImageData(c.width, c.height);
    const n = table.length / 3;
    for (let x = 0; x < c.width; x++) {
      const i = Math.round((x / (c.width - 1)) * (n - 1)) * 3;
      for (let y = 0; y < c.height; y++) img.data.set([table[i], table[i + 1], table[i + 2], 255], (y * c.width + x) * 4);
    }
    ctx.putImageData(img, 0, 0);
    this.barLabels.dataset.lo = String(lo);
    this.barLabels.dataset.hi = String(hi);
    setChildren(
      this.barLabels,
      el("span", { class: "bar-lo" }, perCell ? "−limit" : fmt(lo)),
      el("span", {}, signed ? "0" : ""),
      el("span", { class: "bar-hi" }, perCell ? "+limit" : fmt(hi)),
      el("span", { class: "bar-note" }, note),
      el("span", { class: "bar-nan", title: "NaN / Inf values" }, "NaN/Inf"),
    );
  }

  /** The colour bar of the grid drawn with `table` over `range` under the URL state `s` (norm, pct). */
  drawScale(table, range, s, { signed, images = false }) {
    const perCell = (s.norm === "tile" || s.norm === "filter") && !images;
    const limit = Math.max(Math.abs(range[0]), Math.abs(range[1]));
    this.drawColorbar(table, range, {
      signed,
      perCell,
      note: images
        ? "images as logged (0 black, 1 white; 3 channels as RGB); labels are filter indices"
        : perCell
          ? `${MODE_LABELS[s.norm]}, p${s.pct} (limits up to ${fmt(limit)}; hover a tile)`
          : `${MODE_LABELS[s.norm]}, p${s.pct}`,
    });
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
    c.dataset.tag = this.host.tag() || "";
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
      `${safeName(this.run)}_${safeName(this.host.tag())}_${tensor.step}.npy`);
  }
}
