// What is written on and about a grid canvas besides render.js's pixels: the
// values on their pixels at large zoom, the geometry recorded in the canvas's
// dataset (tests read pixels with it), small static renders (a tooltip's
// kernel tile) and the tooltip lines of a hit. GridView (gridview.js) uses them.

import { fmt } from "./dom.js";
import { cellRect, geometry, renderGrid } from "./render.js";

/**
 * Writes each value of `grid` on its pixel (detail views at large zoom) with
 * `ctx`: `view` {zoom, panX, panY, rowOrder}, `g` its geometry, `pixels` the
 * drawn RGBA of the `width` x `height` canvas (black text on light pixels, white on dark).
 */
export function drawValues(ctx, grid, values, view, g, pixels, width, height) {
  const z = view.zoom;
  ctx.font = `${Math.max(9, Math.floor(z / 4))}px sans-serif`;
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  for (let slot = 0; slot < grid.rows; slot++) {
    const r = view.rowOrder ? view.rowOrder[slot] : slot;
    for (let c = 0; c < grid.cols; c++) {
      const cell = r * grid.cols + c;
      if (cell >= grid.cells) continue;
      const rect = cellRect(grid, z, slot, c, g.band);
      for (let y = 0; y < grid.th; y++) {
        for (let x = 0; x < grid.tw; x++) {
          const off = grid.xOff[x] < 0 ? -1 : grid.cellBase[cell] + grid.yOff[y] + grid.xOff[x];
          if (off < 0) continue;
          const cx = rect.x + x * z + z / 2 - view.panX;
          const cy = rect.y + y * z + z / 2 - view.panY;
          if (cx < 0 || cy < 0 || cx >= width || cy >= height) continue;
          const p = (Math.floor(cy) * width + Math.floor(cx)) * 4;
          const light = 0.3 * pixels[p] + 0.59 * pixels[p + 1] + 0.11 * pixels[p + 2] > 140;
          ctx.fillStyle = light ? "#000" : "#fff";
          const v = grid.rgb ? Array.from(grid.chanOff, (o) => fmt(values[off + o], 2)).join(" ") : fmt(values[off], 3);
          ctx.fillText(v, cx, cy, z - 2);
        }
      }
    }
  }
}

/**
 * Draws `grid` whole at integer `zoom` into `canvas` (small fixed views such as
 * a tooltip's kernel tile) and records the geometry in its dataset like a grid canvas.
 */
export function renderStatic(canvas, data, zoom, bg, sep) {
  const g = geometry(data.grid, zoom);
  canvas.width = g.width;
  canvas.height = g.height;
  const dpr = window.devicePixelRatio || 1;
  canvas.style.width = `${g.width / dpr}px`;
  canvas.style.height = `${g.height / dpr}px`;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(g.width, g.height);
  const view = { zoom, panX: 0, panY: 0, rowOrder: null };
  renderGrid(img.data, g.width, g.height, data.grid, data.values, data.limits, data.table, view, bg, sep);
  ctx.putImageData(img, 0, 0);
  Object.assign(canvas.dataset, {
    run: data.run, tag: data.tag, step: data.step, zoom: String(zoom), panX: "0", panY: "0",
    gap: String(g.gap), rows: String(data.grid.rows), cols: String(data.grid.cols),
    tileH: String(data.grid.th), tileW: String(data.grid.tw), kind: data.grid.kind, ...blockData(g),
  });
}

/** The block geometry a canvas records in its dataset (tests read pixels with it). */
export function blockData(g) {
  return {
    blockCols: String(g.blockCols),
    blockPitchX: String(g.blockPitchX),
    blockPitchY: String(g.blockPitchY),
    band: String(g.band),
  };
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
    lines.push(`filter ${grid.filterLabel(f)} (image ${f + 1} of ${grid.cells}, ${grid.kind})`);
  }
  const pos = grid.th > 1 ? `y ${hit.ty}, x ${hit.tx}` : `x ${hit.tx}`;
  if (hit.offset < 0) {
    lines.push(pos);
  } else if (grid.rgb) {
    const rgb = Array.from(grid.chanOff, (o) => fmt(values[hit.offset + o], 5));
    lines.push(`${pos}: (${rgb.join(", ")})`);
  } else {
    lines.push(`${pos}: ${fmt(values[hit.offset], 6)}`);
  }
  if (limits) lines.push(`colour range [${fmt(limits.lo[hit.cell])}, ${fmt(limits.hi[hit.cell])}]`);
  if (limits && limits.nonfinite[hit.cell]) lines.push(`${limits.nonfinite[hit.cell]} NaN/Inf values`);
  if (data.note) lines.push(data.note);
  return lines;
}
