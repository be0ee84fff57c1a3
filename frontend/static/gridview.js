// The grid canvas view: one <canvas> sized to the visible window, redrawn
// from render.js on zoom/pan. No per-tile DOM: hover and click are hit-tested.

import { el, fmt } from "./dom.js";
import { cellRect, fitZoom, geometry, hitTest, renderGrid } from "./render.js";

const MIN_ZOOM = 1 / 16;
const MAX_ZOOM = 64;

export class GridView {
  /**
   * options.onClick(hit, view), options.onView(view) (zoom/pan changed by the user),
   * options.maxHeight() -> css px, options.maxZoom (css px per value when fitting),
   * options.maxTile (largest tile when fitting, css px), options.className (extra canvas
   * class), options.showValues (write values at large zoom).
   */
  constructor(options = {}) {
    this.options = options;
    this.canvas = el("canvas", { class: `grid-canvas ${options.className || ""}`.trim(), tabindex: "0" });
    this.highlight = el("div", { class: "grid-highlight", hidden: true });
    this.tooltip = el("div", { class: "grid-tooltip", role: "tooltip", hidden: true });
    this.node = el("div", { class: "grid-wrap" }, this.canvas, this.highlight, this.tooltip);
    this.data = null;
    this.view = { zoom: 1, panX: 0, panY: 0, rowOrder: null };
    this.fitted = false;
    this.highlightCells = null;
    this.bg = [255, 255, 255];
    this.sep = [200, 200, 200];
    this.pending = false;
    this.canvas.addEventListener("mousemove", (e) => this.hover(e));
    this.canvas.addEventListener("mouseleave", () => { this.tooltip.hidden = true; });
    this.canvas.addEventListener("click", (e) => this.click(e));
    this.canvas.addEventListener("wheel", (e) => this.wheel(e), { passive: false });
    this.canvas.addEventListener("keydown", (e) => this.key(e));
    this.canvas.addEventListener("mousedown", (e) => this.dragStart(e));
  }

  /**
   * data: {grid, values, limits, table, run, tag, step}; values may be null
   * (nothing to draw yet). Keeps zoom/pan unless the grid's shape changed.
   */
  set(data) {
    const old = this.data && this.data.grid;
    const g = data && data.grid;
    if (!old || !g || old.rows !== g.rows || old.cols !== g.cols || old.th !== g.th || old.tw !== g.tw) {
      this.fitted = false;
    }
    this.data = data;
    if (!this.fitted) this.fit();
    this.draw();
  }

  dpr() {
    return window.devicePixelRatio || 1;
  }

  availableWidth() {
    const w = (this.node.parentElement && this.node.parentElement.clientWidth) || 800;
    return Math.max(120, w - 4);
  }

  availableHeight() {
    return this.options.maxHeight ? this.options.maxHeight() : Math.max(300, window.innerHeight * 0.75);
  }

  /** Zoom so the grid fits the width (tiles at most 24 px per value). */
  fit() {
    if (!this.data) return;
    const dpr = this.dpr();
    const grid = this.data.grid;
    // tiles at most options.maxTile css px (default 72: 24 px per value for 3x3 kernels, 10 for 7x7)
    const maxTile = this.options.maxTile || 72;
    const maxZoom = Math.min(this.options.maxZoom || 24, Math.max(1, Math.floor(maxTile / Math.max(grid.th, grid.tw))));
    let z = fitZoom(grid, this.availableWidth() * dpr, Math.round(maxZoom * dpr));
    // shrink to fit the height too, but keep tiles >= ~24 px (then scroll)
    const zH = Math.floor((this.availableHeight() * dpr - (grid.rows - 1)) / (grid.rows * grid.th));
    if (zH < z && z >= 1) z = Math.max(1, zH, Math.min(z, Math.ceil((24 * dpr) / Math.max(grid.th, grid.tw))));
    this.view.zoom = z;
    this.view.panX = 0;
    this.view.panY = 0;
    this.fitted = true;
  }

  setView(view) {
    Object.assign(this.view, view);
    this.fitted = true;
    this.draw();
  }

  setRowOrder(order) {
    this.view.rowOrder = order;
    this.draw();
  }

  /** Outlines cells [start, end) of one grid row (a filter), or nothing (null). */
  setHighlight(cells) {
    this.highlightCells = cells;
    this.placeHighlight();
  }

  clampPan() {
    if (!this.data) return;
    const g = geometry(this.data.grid, this.view.zoom);
    const maxX = Math.max(0, g.width - this.canvas.width);
    const maxY = Math.max(0, g.height - this.canvas.height);
    this.view.panX = Math.round(Math.min(Math.max(0, this.view.panX), maxX));
    this.view.panY = Math.round(Math.min(Math.max(0, this.view.panY), maxY));
  }

  /** Schedules a redraw on the next animation frame (coalesced). */
  draw() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.drawNow();
    });
  }

  drawNow() {
    const d = this.data;
    if (!d || !d.grid) return;
    const dpr = this.dpr();
    const g = geometry(d.grid, this.view.zoom);
    const w = Math.max(1, Math.min(g.width, Math.floor(this.availableWidth() * dpr)));
    const h = Math.max(1, Math.min(g.height, Math.floor(this.availableHeight() * dpr)));
    if (this.canvas.width !== w) this.canvas.width = w;
    if (this.canvas.height !== h) this.canvas.height = h;
    this.canvas.style.width = `${w / dpr}px`;
    this.canvas.style.height = `${h / dpr}px`;
    this.clampPan();
    const ctx = this.canvas.getContext("2d");
    if (d.values) {
      const img = ctx.createImageData(w, h);
      renderGrid(img.data, w, h, d.grid, d.values, d.limits, d.table, this.view, this.bg, this.sep);
      ctx.putImageData(img, 0, 0);
      if (this.options.showValues && this.view.zoom >= 30 * dpr) this.drawValues(ctx, g, img.data, w);
    }
    const c = this.canvas;
    c.dataset.run = d.run;
    c.dataset.tag = d.tag;
    c.dataset.step = d.step;
    c.dataset.zoom = String(this.view.zoom);
    c.dataset.panX = String(this.view.panX);
    c.dataset.panY = String(this.view.panY);
    c.dataset.gap = String(g.gap);
    c.dataset.rows = String(d.grid.rows);
    c.dataset.cols = String(d.grid.cols);
    c.dataset.tileH = String(d.grid.th);
    c.dataset.tileW = String(d.grid.tw);
    c.dataset.kind = d.grid.kind;
    c.dataset.mode = d.mode || "";
    c.dataset.view = d.viewName || "raw";
    c.dataset.rendered = String((Number(c.dataset.rendered) || 0) + 1);
    this.placeHighlight();
  }

  /** Writes each value on its pixel (detail views at large zoom). */
  drawValues(ctx, g, pixels, width) {
    const { grid, values } = this.data;
    const z = this.view.zoom;
    ctx.font = `${Math.max(9, Math.floor(z / 4))}px sans-serif`;
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    for (let row = 0; row < grid.rows; row++) {
      for (let c = 0; c < grid.cols; c++) {
        const r = this.view.rowOrder ? this.view.rowOrder[row] : row;
        if (r * grid.cols + c >= grid.cells) continue;
        for (let y = 0; y < grid.th; y++) {
          for (let x = 0; x < grid.tw; x++) {
            const off = grid.xOff[x] < 0 ? -1 : grid.cellBase[r * grid.cols + c] + grid.yOff[y] + grid.xOff[x];
            if (off < 0) continue;
            const cx = c * g.pitchX + x * z + z / 2 - this.view.panX;
            const cy = row * g.pitchY + y * z + z / 2 - this.view.panY;
            if (cx < 0 || cy < 0 || cx >= this.canvas.width || cy >= this.canvas.height) continue;
            const p = (Math.floor(cy) * width + Math.floor(cx)) * 4;
            const light = 0.3 * pixels[p] + 0.59 * pixels[p + 1] + 0.11 * pixels[p + 2] > 140;
            ctx.fillStyle = light ? "#000" : "#fff";
            const v = grid.rgb ? grid.chanOff.map((o) => fmt(values[off + o], 2)).join(" ") : fmt(values[off], 3);
            ctx.fillText(v, cx, cy, z - 2);
          }
        }
      }
    }
  }

  placeHighlight() {
    const d = this.data;
    const cells = this.highlightCells;
    if (!d || !cells) {
      this.highlight.hidden = true;
      return;
    }
    const [start, end] = cells;
    const cols = d.grid.cols;
    const r = Math.floor(start / cols);
    const order = this.view.rowOrder;
    const row = order ? Array.prototype.indexOf.call(order, r) : r;
    const c0 = start % cols;
    const c1 = (end - 1) % cols;
    const dpr = this.dpr();
    const a = cellRect(d.grid, this.view.zoom, row, c0);
    const b = cellRect(d.grid, this.view.zoom, row, c1);
    const left = (a.x - this.view.panX) / dpr;
    const top = (a.y - this.view.panY) / dpr;
    const width = (b.x + b.w - a.x) / dpr;
    const height = a.h / dpr;
    if (row < 0 || top + height < 0 || top > this.canvas.height / dpr) {
      this.highlight.hidden = true;
      return;
    }
    Object.assign(this.highlight.style, {
      left: `${left - 2}px`,
      top: `${top - 2}px`,
      width: `${width + 4}px`,
      height: `${height + 4}px`,
    });
    this.highlight.hidden = false;
  }

  /** Scrolls so grid row `row` is visible. */
  reveal(row) {
    if (!this.data) return;
    const order = this.view.rowOrder;
    const display = order ? Array.prototype.indexOf.call(order, row) : row;
    const rect = cellRect(this.data.grid, this.view.zoom, display, 0);
    if (rect.y < this.view.panY || rect.y + rect.h > this.view.panY + this.canvas.height) {
      this.view.panY = rect.y - this.canvas.height / 3;
      this.draw();
    }
  }

  hitAt(e) {
    if (!this.data || !this.data.values) return null;
    const dpr = this.dpr();
    const rect = this.canvas.getBoundingClientRect();
    const sx = Math.floor((e.clientX - rect.left) * dpr);
    const sy = Math.floor((e.clientY - rect.top) * dpr);
    return hitTest(this.data.grid, this.view, sx, sy);
  }

  hover(e) {
    if (this.drag) return;
    const hit = this.hitAt(e);
    if (!hit) {
      this.tooltip.hidden = true;
      return;
    }
    const { grid, values, limits } = this.data;
    const lines = describe(grid, hit, values, limits, this.data);
    this.tooltip.replaceChildren(...lines.map((t) => el("div", {}, t)));
    const box = this.node.getBoundingClientRect();
    const x = e.clientX - box.left + 14;
    const y = e.clientY - box.top + 14;
    this.tooltip.style.left = `${Math.min(x, Math.max(0, box.width - 220))}px`;
    this.tooltip.style.top = `${y}px`;
    this.tooltip.hidden = false;
  }

  click(e) {
    if (this.dragged) return;
    const hit = this.hitAt(e);
    if (hit && this.options.onClick) this.options.onClick(hit, this);
  }

  zoomAt(factor, sx, sy) {
    if (!this.data) return;
    const old = this.view.zoom;
    let z = old * factor;
    if (z >= 1) z = factor > 1 ? Math.max(Math.round(z), Math.floor(old) + 1) : Math.max(1, Math.round(z));
    z = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, z));
    if (z === old) return;
    // keep the point under (sx, sy) fixed
    const gx = (sx + this.view.panX) / geometry(this.data.grid, old).pitchX;
    const gy = (sy + this.view.panY) / geometry(this.data.grid, old).pitchY;
    this.view.zoom = z;
    const g = geometry(this.data.grid, z);
    this.view.panX = gx * g.pitchX - sx;
    this.view.panY = gy * g.pitchY - sy;
    this.changed();
  }

  panBy(dx, dy) {
    this.view.panX += dx;
    this.view.panY += dy;
    this.changed();
  }

  changed() {
    this.fitted = true;
    this.clampPan();
    this.drawNow();
    if (this.options.onView) this.options.onView(this.view, this);
  }

  wheel(e) {
    if (!this.data) return;
    const dpr = this.dpr();
    const rect = this.canvas.getBoundingClientRect();
    if (e.ctrlKey || e.metaKey) {
      e.preventDefault();
      const sx = (e.clientX - rect.left) * dpr;
      const sy = (e.clientY - rect.top) * dpr;
      this.zoomAt(e.deltaY < 0 ? 1.25 : 0.8, sx, sy);
      return;
    }
    const g = geometry(this.data.grid, this.view.zoom);
    const scrollsX = g.width > this.canvas.width;
    const scrollsY = g.height > this.canvas.height;
    const dx = e.shiftKey ? e.deltaY : e.deltaX;
    const dy = e.shiftKey ? 0 : e.deltaY;
    if ((dy && scrollsY) || (dx && scrollsX)) {
      e.preventDefault();
      this.panBy(dx * dpr, dy * dpr);
    }
  }

  key(e) {
    const step = 40 * this.dpr();
    const cx = this.canvas.width / 2;
    const cy = this.canvas.height / 2;
    const actions = {
      "+": () => this.zoomAt(1.5, cx, cy),
      "=": () => this.zoomAt(1.5, cx, cy),
      "-": () => this.zoomAt(1 / 1.5, cx, cy),
      0: () => { this.fit(); this.changed(); },
      ArrowLeft: () => this.panBy(-step, 0),
      ArrowRight: () => this.panBy(step, 0),
      ArrowUp: () => this.panBy(0, -step),
      ArrowDown: () => this.panBy(0, step),
    };
    const action = actions[e.key];
    if (action) {
      e.preventDefault();
      action();
    }
  }

  dragStart(e) {
    if (e.button !== 0) return;
    const start = { x: e.clientX, y: e.clientY, panX: this.view.panX, panY: this.view.panY };
    this.dragged = false;
    const move = (ev) => {
      const dx = ev.clientX - start.x;
      const dy = ev.clientY - start.y;
      if (!this.dragged && Math.abs(dx) + Math.abs(dy) < 4) return;
      this.dragged = true;
      this.drag = true;
      this.tooltip.hidden = true;
      const dpr = this.dpr();
      this.view.panX = start.panX - dx * dpr;
      this.view.panY = start.panY - dy * dpr;
      this.changed();
    };
    const up = () => {
      window.removeEventListener("mousemove", move);
      window.removeEventListener("mouseup", up);
      this.drag = false;
      setTimeout(() => { this.dragged = false; }, 0);
    };
    window.addEventListener("mousemove", move);
    window.addEventListener("mouseup", up);
  }
}

/** Tooltip lines for a hit: indices, exact value, limits. */
export function describe(grid, hit, values, limits, data = {}) {
  const f = grid.filterOf(hit.r, hit.c);
  const lines = [];
  if (grid.kind === "kernel") {
    const ch = grid.channelOf(hit.r, hit.c);
    lines.push(grid.rgb
      ? `filter ${grid.filterLabel(f)}, RGB`
      : `filter ${grid.filterLabel(f)}, channel ${grid.channelLabel(ch)}`);
  } else if (grid.kind === "activation") {
    lines.push(`channel ${grid.filterLabel(f)}, sample ${grid.sample}`);
  } else {
    lines.push(`filter ${grid.filterLabel(f)}`);
  }
  const pos = grid.th > 1 ? `y ${hit.ty}, x ${hit.tx}` : `x ${hit.tx}`;
  if (hit.offset < 0) {
    lines.push(pos);
  } else if (grid.rgb) {
    const rgb = grid.chanOff.map((o) => fmt(values[hit.offset + o], 5));
    lines.push(`${pos}: (${rgb.join(", ")})`);
  } else {
    lines.push(`${pos}: ${fmt(values[hit.offset], 6)}`);
  }
  if (limits) lines.push(`colour range [${fmt(limits.lo[hit.cell])}, ${fmt(limits.hi[hit.cell])}]`);
  if (limits && limits.nonfinite[hit.cell]) lines.push(`${limits.nonfinite[hit.cell]} NaN/Inf values`);
  if (data.note) lines.push(data.note);
  return lines;
}
