// The grid canvas view: one <canvas> sized to the visible window, redrawn
// from render.js on zoom/pan. No per-tile DOM: hover and click are hit-tested.
// What is written on and about the canvas (values, dataset, tooltip lines) is
// gridcanvas.js; the badges and labels over it, overlay.js.

import { el } from "./dom.js";
import { blockData, describe, drawValues } from "./gridcanvas.js";
import { drawOverlay } from "./overlay.js";
import { blockRect, cellRect, fitBlocks, fitZoom, geometry, hitTest, imageFor, renderGrid } from "./render.js";

const MIN_ZOOM = 1 / 16;
const MAX_ZOOM = 64;
/** Largest css px per value when fitting (unless options.maxZoom says otherwise). */
const FIT_ZOOM = 48;
/** Block labels: css px of the band above each block, shown once tiles are this tall. */
const LABEL_BAND = 15;
const LABEL_MIN_TILE = 10;
/** Fitting to the height never shrinks tiles below this (css px): the grid scrolls instead. */
const MIN_FIT_TILE = 24;

export class GridView {
  /**
   * options.onClick(hit, view), options.onView(view, gridView) (zoom/pan changed by the
   * user; gridView.userZoom: css px per value the user chose, null after fitting),
   * options.maxHeight() -> css px, options.maxZoom (css px per value when fitting),
   * options.maxTile (largest tile when fitting, css px), options.className (extra canvas
   * class), options.showValues (write values at large zoom), options.hoverExtra(hit, view)
   * -> nodes appended to the tooltip (or null), options.onDrawn(gridView) (after every
   * draw: zoom, pan, sort, resize; e.g. to place what sits beside the rows).
   */
  constructor(options = {}) {
    this.options = options;
    this.canvas = el("canvas", { class: `grid-canvas ${options.className || ""}`.trim(), tabindex: "0" });
    this.highlight = el("div", { class: "grid-highlight", hidden: true });
    this.tooltip = el("div", { class: "grid-tooltip", role: "tooltip", hidden: true });
    this.node = el("div", { class: "grid-wrap" }, this.canvas, this.highlight, this.tooltip);
    // badges and image labels: drawn on a transparent canvas over the grid (made on first use)
    this.overlay = null;
    this.marks = null;
    this.lastMouse = null;
    this.data = null;
    this.view = { zoom: 1, panX: 0, panY: 0, rowOrder: null };
    this.fitted = false;
    this.userZoom = null;
    this.highlightCells = null;
    this.bg = [255, 255, 255];
    this.sep = [200, 200, 200];
    this.pending = false;
    // css px kept free right of the grid, and block grids stacked one filter a line (setBeside)
    this.beside = 0;
    this.stack = false;
    this.canvas.addEventListener("mousemove", (e) => this.hover(e));
    this.canvas.addEventListener("mouseleave", () => { this.tooltip.hidden = true; this.lastMouse = null; });
    this.canvas.addEventListener("click", (e) => this.click(e));
    this.canvas.addEventListener("wheel", (e) => this.wheel(e), { passive: false });
    this.canvas.addEventListener("keydown", (e) => this.key(e));
    this.canvas.addEventListener("mousedown", (e) => this.dragStart(e));
  }

  /**
   * data: {grid, values, limits, table, run, tag, step, maxTile?, zoom?}; values may be
   * null (nothing to draw yet). zoom: css px per value chosen by the user (the URL
   * state), else the grid opens fitted. Keeps zoom/pan unless the grid's shape changed.
   */
  set(data) {
    const old = this.source;
    const g = data && data.grid;
    if (!old || !g || old.rows !== g.rows || old.cols !== g.cols || old.th !== g.th || old.tw !== g.tw
      || old.blocks !== g.blocks) {
      this.fitted = false;
    }
    this.source = g;
    this.data = g ? { ...data, grid: this.shown(g) } : data;
    const want = data && data.zoom ? this.deviceZoom(data.zoom) : null;
    if (!this.fitted) this.fit(); // also lays out the blocks for the area
    if (want !== null && want !== this.view.zoom) {
      this.view.zoom = want;
      this.userZoom = data.zoom;
    }
    this.draw();
  }

  /** The grid as drawn: a block grid with the block columns fit() chose for it. */
  shown(grid) {
    if (!grid.blocks || !this.blockCols || this.blockCols === grid.blockCols) return grid;
    if (!this.shownGrid || this.shownGrid.from !== grid || this.shownGrid.grid.blockCols !== this.blockCols) {
      this.shownGrid = { from: grid, grid: { ...grid, blockCols: this.blockCols } };
    }
    return this.shownGrid.grid;
  }

  /** Device px per value for `css` css px per value (integer from 1 up, within the zoom range). */
  deviceZoom(css) {
    const z = css * this.dpr();
    return Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, z >= 1 ? Math.round(z) : z));
  }

  /** Device px of the label band above each block at `zoom` (0: tiles too small; strips have none). */
  bandFor(zoom) {
    const grid = this.data && this.data.grid;
    const dpr = this.dpr();
    if (!grid || grid.th * zoom < LABEL_MIN_TILE * dpr) return 0;
    return Math.round(LABEL_BAND * dpr);
  }

  /** The view with its label band: what render.js draws and hit-tests. */
  frameView() {
    return { ...this.view, band: this.bandFor(this.view.zoom) };
  }

  /** The geometry at the current zoom. */
  geo() {
    return geometry(this.data.grid, this.view.zoom, this.bandFor(this.view.zoom));
  }

  dpr() {
    return window.devicePixelRatio || 1;
  }

  availableWidth() {
    const w = (this.node.parentElement && this.node.parentElement.clientWidth) || 800;
    return Math.max(120, w - 4 - this.beside);
  }

  availableHeight() {
    return this.options.maxHeight ? this.options.maxHeight() : Math.max(300, window.innerHeight * 0.75);
  }

  /**
   * Zoom so the grid fills the available width (at most FIT_ZOOM css px per value,
   * or options.maxZoom / maxTile); then, if that is taller than the available height,
   * shrink to show the whole grid, but not below MIN_FIT_TILE px tiles (then it scrolls).
   * A block grid also gets the number of block columns that shows it largest.
   */
  fit() {
    if (!this.data || !this.data.grid) return;
    const dpr = this.dpr();
    const source = this.source || this.data.grid;
    const big = Math.max(source.th, source.tw);
    const maxTile = this.data.maxTile || this.options.maxTile || Infinity;
    const maxZoom = Math.round(Math.min(this.options.maxZoom || FIT_ZOOM, Math.max(1, Math.floor(maxTile / big))) * dpr);
    const least = Math.ceil((MIN_FIT_TILE * dpr) / big);
    const width = this.availableWidth() * dpr;
    const height = this.availableHeight() * dpr;
    let z;
    if (source.blocks && !this.stack) {
      const best = fitBlocks(source, width, height, maxZoom, least, (zoom) => this.bandFor(zoom));
      this.blockCols = best.blockCols;
      this.data.grid = this.shown(source);
      z = best.zoom;
    } else {
      if (source.blocks) {
        this.blockCols = 1;
        this.data.grid = this.shown(source);
      }
      const grid = this.data.grid;
      z = fitZoom(grid, width, maxZoom);
      while (z > 1 && z > least && geometry(grid, z, this.bandFor(z)).height > height) z--;
    }
    this.view.zoom = z;
    this.view.panX = 0;
    this.view.panY = 0;
    this.fitted = true;
    this.userZoom = null;
  }

  /**
   * Leaves `width` css px free right of the grid and, with `stack`, draws a block grid's
   * filters one a line (rows beside which something is drawn); fits again when either
   * changes (a zoom the user chose is kept).
   */
  setBeside(width, stack) {
    if (width === this.beside && stack === this.stack) return;
    this.beside = width;
    this.stack = stack;
    this.fitted = false;
    if (!this.data || !this.data.grid) return;
    const chosen = this.userZoom;
    this.fit();
    if (chosen !== null) {
      this.view.zoom = this.deviceZoom(chosen);
      this.userZoom = chosen;
    }
    this.draw();
  }

  /** Zoom/pan from another view (compared panels move together); `userZoom` as in onView. */
  setView(view, userZoom = null) {
    Object.assign(this.view, view);
    this.fitted = true;
    this.userZoom = userZoom;
    this.draw();
  }

  setRowOrder(order) {
    this.view.rowOrder = order;
    this.draw();
  }

  /**
   * Marks drawn over the grid: {badges: [{label, problems, cells: [start, end)}]
   * (findings.badgesFor), labels: true to write each image tile's filter label, rowNotes:
   * a short text per grid row, e.g. an aligned row's matched cosine}; null: none.
   * Block layouts label every block with its filter index whatever the marks.
   */
  setMarks(marks) {
    this.marks = marks;
    this.drawOverlay();
  }

  /** Outlines cells [start, end) of one grid row (a filter), or nothing (null). */
  setHighlight(cells) {
    this.highlightCells = cells;
    this.placeHighlight();
  }

  clampPan() {
    if (!this.data) return;
    const g = this.geo();
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
    const g = this.geo();
    const w = Math.max(1, Math.min(g.width, Math.floor(this.availableWidth() * dpr)));
    const h = Math.max(1, Math.min(g.height, Math.floor(this.availableHeight() * dpr)));
    if (this.canvas.width !== w) this.canvas.width = w;
    if (this.canvas.height !== h) this.canvas.height = h;
    this.canvas.style.width = `${w / dpr}px`;
    this.canvas.style.height = `${h / dpr}px`;
    this.clampPan();
    const ctx = this.canvas.getContext("2d");
    if (d.values) {
      const img = imageFor(ctx, w, h);
      renderGrid(img.data, w, h, d.grid, d.values, d.limits, d.table, this.frameView(), this.bg, this.sep);
      ctx.putImageData(img, 0, 0);
      if (this.options.showValues && this.view.zoom >= 30 * dpr) drawValues(ctx, d.grid, d.values, this.view, g, img.data, w, h);
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
    Object.assign(c.dataset, blockData(g));
    c.dataset.kind = d.grid.kind;
    c.dataset.mode = d.mode || "";
    c.dataset.view = d.viewName || "raw";
    c.dataset.rendered = String((Number(c.dataset.rendered) || 0) + 1);
    this.drawOverlay();
    this.placeHighlight();
    if (this.options.onDrawn) this.options.onDrawn(this);
  }

  /** Display slot of grid row `r` (where view.rowOrder puts it; -1 if nowhere). */
  slotOf(r) {
    const order = this.view.rowOrder;
    return order ? Array.prototype.indexOf.call(order, r) : r;
  }

  /**
   * Device-px rectangle (before panning) over cells [start, end) of one grid row:
   * a filter's block, or one tile.
   */
  spanRect(start, end) {
    const grid = this.data.grid;
    const band = this.bandFor(this.view.zoom);
    const slot = this.slotOf(Math.floor(start / grid.cols));
    const a = cellRect(grid, this.view.zoom, slot, start % grid.cols, band);
    const b = cellRect(grid, this.view.zoom, slot, (end - 1) % grid.cols, band);
    return { slot, x: a.x, y: a.y, w: b.x + b.w - a.x, h: a.h };
  }

  /** Redraws the badges / labels canvas over the visible window (overlay.js). */
  drawOverlay() {
    drawOverlay(this);
  }

  placeHighlight() {
    const d = this.data;
    const cells = this.highlightCells;
    if (!d || !cells) {
      this.highlight.hidden = true;
      return;
    }
    const dpr = this.dpr();
    const rect = this.spanRect(cells[0], cells[1]);
    const left = (rect.x - this.view.panX) / dpr;
    const top = (rect.y - this.view.panY) / dpr;
    const width = rect.w / dpr;
    const height = rect.h / dpr;
    if (rect.slot < 0 || top + height < 0 || top > this.canvas.height / dpr
      || left + width < 0 || left > this.canvas.width / dpr) {
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

  /** Scrolls so grid row `row` (a filter's block) is visible. */
  reveal(row) {
    if (!this.data) return;
    const slot = this.slotOf(row);
    if (slot < 0) return;
    const rect = blockRect(this.data.grid, this.view.zoom, slot, this.bandFor(this.view.zoom));
    let moved = false;
    if (rect.y < this.view.panY || rect.y + rect.h > this.view.panY + this.canvas.height) {
      this.view.panY = rect.y - this.canvas.height / 3;
      moved = true;
    }
    if (rect.x < this.view.panX || rect.x + rect.w > this.view.panX + this.canvas.width) {
      this.view.panX = rect.x - this.canvas.width / 3;
      moved = true;
    }
    if (moved) this.draw();
  }

  hitAt(e) {
    if (!this.data || !this.data.values) return null;
    const dpr = this.dpr();
    const rect = this.canvas.getBoundingClientRect();
    const sx = Math.floor((e.clientX - rect.left) * dpr);
    const sy = Math.floor((e.clientY - rect.top) * dpr);
    return hitTest(this.data.grid, this.frameView(), sx, sy);
  }

  hover(e) {
    if (this.drag) return;
    this.lastMouse = { clientX: e.clientX, clientY: e.clientY };
    const hit = this.hitAt(e);
    if (!hit) {
      this.tooltip.hidden = true;
      return;
    }
    const { grid, values, limits } = this.data;
    const lines = describe(grid, hit, values, limits, this.data);
    const extra = this.options.hoverExtra ? this.options.hoverExtra(hit, this) : null;
    this.tooltip.replaceChildren(...lines.map((t) => el("div", {}, t)), ...(extra || []));
    // position: fixed, so the grid's clipping box does not cut the tooltip off
    this.tooltip.hidden = false;
    const w = this.tooltip.offsetWidth;
    const h = this.tooltip.offsetHeight;
    const x = e.clientX + 14 + w > window.innerWidth ? Math.max(0, e.clientX - 14 - w) : e.clientX + 14;
    const y = e.clientY + 14 + h > window.innerHeight ? Math.max(0, e.clientY - 14 - h) : e.clientY + 14;
    this.tooltip.style.left = `${x}px`;
    this.tooltip.style.top = `${y}px`;
  }

  /** Rebuilds the tooltip at the last mouse position (e.g. once data it shows has loaded). */
  rehover() {
    if (this.lastMouse && !this.tooltip.hidden) this.hover(this.lastMouse);
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
    const before = this.geo();
    const gx = (sx + this.view.panX) / before.width;
    const gy = (sy + this.view.panY) / before.height;
    this.view.zoom = z;
    this.userZoom = z / this.dpr();
    const g = this.geo();
    this.view.panX = gx * g.width - sx;
    this.view.panY = gy * g.height - sy;
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
    const g = this.geo();
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
