// What is drawn over a grid canvas, on a transparent canvas of its own: block
// labels, image labels, aligned rows' matched cosines and the filter doctor's finding badges (positions from
// render.js geometry through GridView.spanRect, so they follow zoom, pan and sorting).

import { el } from "./dom.js";
import { cssColor, PROBLEM_STYLE } from "./findings.js";
import { blockLabel } from "./layout.js";
import { blockRect } from "./render.js";

/**
 * Redraws the transparent canvas over GridView `gv`'s grid (made on first use):
 * block labels, image labels and finding badges of the visible window, in device px.
 */
export function drawOverlay(gv) {
  const d = gv.data;
  const marks = gv.marks;
  const blocks = Boolean(d && d.grid && d.grid.blockCols > 1);
  if (!gv.overlay && (marks || blocks)) {
    gv.overlay = el("canvas", { class: "grid-overlay", "aria-hidden": "true" });
    gv.node.insertBefore(gv.overlay, gv.tooltip);
  }
  const o = gv.overlay;
  if (!o) return;
  const c = gv.canvas;
  if (o.width !== c.width) o.width = c.width;
  if (o.height !== c.height) o.height = c.height;
  o.style.width = c.style.width;
  o.style.height = c.style.height;
  const ctx = o.getContext("2d");
  ctx.clearRect(0, 0, o.width, o.height);
  if (!d || !d.grid || !d.values) {
    o.dataset.badges = "[]";
    delete o.dataset.labels;
    delete o.dataset.blockLabels;
    delete o.dataset.rowNotes;
    return;
  }
  const grid = d.grid;
  const g = gv.geo();
  const dpr = gv.dpr();
  const { panX, panY } = gv.view;
  if (blocks) {
    // the label of the block in each display slot
    const order = gv.view.rowOrder;
    const labels = Array.from({ length: grid.rows }, (_, slot) => blockLabel(grid, order ? order[slot] : slot));
    o.dataset.blockLabels = JSON.stringify(labels);
    if (g.band) drawBlockLabels(gv, ctx, g, labels);
  } else {
    delete o.dataset.blockLabels;
  }
  if (marks && marks.labels) {
    const labels = [];
    for (let cell = 0; cell < grid.cells; cell++) labels.push(grid.filterLabel(cell));
    o.dataset.labels = JSON.stringify(labels);
    if (g.tileH >= 16 * dpr && g.tileW >= 16 * dpr) drawLabels(gv, ctx, g, labels);
  } else {
    delete o.dataset.labels;
  }
  if (marks && marks.rowNotes) {
    // aligned runs (align.js): each row's matched cosine, in display order
    const order = gv.view.rowOrder;
    o.dataset.rowNotes = JSON.stringify(Array.from({ length: grid.rows }, (_, slot) => marks.rowNotes[order ? order[slot] : slot]));
    if (g.tileH >= 12 * dpr) drawRowNotes(gv, ctx, g, marks.rowNotes);
  } else {
    delete o.dataset.rowNotes;
  }
  const placed = [];
  for (const badge of (marks && marks.badges) || []) {
    const [start, end] = badge.cells;
    const rect = gv.spanRect(start, end);
    const c0 = start % grid.cols;
    placed.push({ filter: badge.label, problems: badge.problems, row: rect.slot, col: c0, cols: (end - 1) % grid.cols - c0 + 1 });
    const x = rect.x - panX;
    const y = rect.y - panY;
    if (x > o.width || y > o.height || x + rect.w < 0 || y + rect.h < 0) continue;
    drawBadge(ctx, x, y, rect.w, rect.h, badge.problems, dpr);
  }
  o.dataset.badges = JSON.stringify(placed);
  o.dataset.run = d.run;
  o.dataset.tag = d.tag;
  o.dataset.step = d.step;
}

/** Each visible block's label (its filter's index) in the band above it. */
function drawBlockLabels(gv, ctx, g, labels) {
  const grid = gv.data.grid;
  const size = Math.round(g.band * 0.75);
  const [r, gr, b] = gv.bg;
  ctx.font = `${size}px sans-serif`;
  ctx.textBaseline = "bottom";
  ctx.textAlign = "left";
  ctx.fillStyle = 0.3 * r + 0.59 * gr + 0.11 * b > 128 ? "#202124" : "#e8eaed";
  for (let slot = 0; slot < grid.rows; slot++) {
    const rect = blockRect(grid, g.zoom, slot, g.band);
    const x = rect.x - gv.view.panX;
    const y = rect.y - gv.view.panY;
    if (x + rect.w < 0 || x > gv.overlay.width || y < 0 || y - g.band > gv.overlay.height) continue;
    ctx.fillText(labels[slot], x, y - 1, rect.w);
  }
}

/** Each visible row's note (marks.rowNotes[r]) in the top-right corner of its row or block. */
function drawRowNotes(gv, ctx, g, notes) {
  const grid = gv.data.grid;
  const dpr = gv.dpr();
  const size = Math.round(Math.min(10 * dpr, g.tileH / 2));
  ctx.font = `${size}px sans-serif`;
  ctx.textBaseline = "top";
  ctx.textAlign = "right";
  const pad = Math.max(1, Math.round(size / 6));
  for (let r = 0; r < grid.rows; r++) {
    const rect = gv.spanRect(r * grid.cols, (r + 1) * grid.cols);
    const x = rect.x + rect.w - gv.view.panX;
    const y = rect.y - gv.view.panY;
    if (x < 0 || x - rect.w > gv.overlay.width || y + rect.h < 0 || y > gv.overlay.height) continue;
    const text = notes[r];
    const w = Math.min(rect.w, ctx.measureText(text).width + 2 * pad);
    ctx.fillStyle = "rgba(0, 0, 0, 0.6)";
    ctx.fillRect(x - w, y, w, size + 2 * pad);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, x - pad, y + pad, rect.w - 2 * pad);
  }
}

/** Each visible image tile's label (its filter index) in its top-left corner. */
function drawLabels(gv, ctx, g, labels) {
  const grid = gv.data.grid;
  const dpr = gv.dpr();
  const size = Math.round(Math.min(11 * dpr, g.tileH / 3));
  ctx.font = `${size}px sans-serif`;
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  const pad = Math.max(1, Math.round(size / 6));
  for (let cell = 0; cell < grid.cells; cell++) {
    const rect = gv.spanRect(cell, cell + 1);
    const x = rect.x - gv.view.panX;
    const y = rect.y - gv.view.panY;
    if (x + g.tileW < 0 || x > gv.overlay.width || y + g.tileH < 0 || y > gv.overlay.height) continue;
    const text = labels[cell];
    const w = Math.min(g.tileW, ctx.measureText(text).width + 2 * pad);
    ctx.fillStyle = "rgba(0, 0, 0, 0.6)";
    ctx.fillRect(x, y, w, size + 2 * pad);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, x + pad, y + pad, g.tileW - 2 * pad);
  }
}

/**
 * A finding badge over the filter's tiles (device px x, y, w, h): a frame in
 * the first problem's colour (filled, when the tiles are too small for a
 * frame) and, where they fit, one chip per problem with its name or code.
 */
function drawBadge(ctx, x, y, w, h, problems, dpr) {
  const lw = Math.max(2, Math.round(2 * dpr));
  const main = problems[0];
  if (h < 3 * lw || w < 3 * lw) {
    ctx.fillStyle = cssColor(main);
    ctx.fillRect(x, y, w, h);
    return;
  }
  ctx.lineWidth = lw + 2;
  ctx.strokeStyle = "rgba(0, 0, 0, 0.85)";
  ctx.strokeRect(x + (lw + 2) / 2, y + (lw + 2) / 2, w - lw - 2, h - lw - 2);
  ctx.lineWidth = lw;
  ctx.strokeStyle = cssColor(main);
  ctx.strokeRect(x + lw / 2, y + lw / 2, w - lw, h - lw);
  const size = Math.round(Math.min(11 * dpr, (h - 2 * lw) * 0.7));
  if (size < 7 * dpr) return;
  ctx.font = `bold ${size}px sans-serif`;
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  const pad = Math.max(1, Math.round(size / 5));
  const room = w - 2 * lw;
  const words = ctx.measureText(problems.join(" ")).width + problems.length * (2 * pad + 1);
  let cx = x + lw;
  for (const p of problems) {
    const text = words <= room ? p : PROBLEM_STYLE[p].code;
    const cw = ctx.measureText(text).width + 2 * pad;
    if (cx + cw > x + w - lw) break;
    ctx.fillStyle = cssColor(p);
    ctx.fillRect(cx, y + lw, cw, size + 2 * pad);
    ctx.fillStyle = cssColor(p, "text");
    ctx.fillText(text, cx + pad, y + lw + pad);
    cx += cw + 1;
  }
}
