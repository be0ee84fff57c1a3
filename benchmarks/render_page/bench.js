// Render benchmark page: the dashboard's own pure modules (imported, not copied)
// against a straightforward per-value loop, on the same bytes, same canvas size.

import { parseNpy } from "/frontend/static/api.js";
import { lut } from "/frontend/static/colormap.js";
import { canonicalize } from "/frontend/static/layout.js";
import { cellLimits, DEFAULT_PERCENTILE } from "/frontend/static/normalize.js";
import { geometry, imageFor, renderGrid } from "/frontend/static/render.js";

const buffers = [];
const tensors = []; // parsed once, as the dashboard's tensor cache keeps them
const canvas = document.createElement("canvas");
document.body.append(canvas);
const ctx = canvas.getContext("2d");
const BG = [255, 255, 255];

function sized(width, height) {
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
  return ctx.createImageData(width, height);
}

/**
 * A parsed tensor (or the bytes of a .npy in memory) -> the dashboard's grid on the
 * canvas (zoom 1, layer limits), the way gridview draws it.
 */
function ours(source) {
  const t0 = performance.now();
  const npy = source instanceof ArrayBuffer ? parseNpy(source) : source;
  const grid = canonicalize({ kind: "kernel", layout: "HWIO", shape: npy.shape });
  const t1 = performance.now();
  const limits = cellLimits(grid, npy.array, { mode: "layer", p: DEFAULT_PERCENTILE, signed: true });
  const t2 = performance.now();
  const g = geometry(grid, 1);
  if (canvas.width !== g.width) canvas.width = g.width;
  if (canvas.height !== g.height) canvas.height = g.height;
  const img = imageFor(ctx, g.width, g.height);
  const view = { zoom: 1, panX: 0, panY: 0, rowOrder: null };
  renderGrid(img.data, g.width, g.height, grid, npy.array, limits, lut("diverging"), view, BG);
  const t3 = performance.now();
  ctx.putImageData(img, 0, 0);
  const t4 = performance.now();
  return { total: t4 - t0, parse: t1 - t0, limits: t2 - t1, render: t3 - t2, put: t4 - t3, width: g.width, height: g.height };
}

const NAIVE_LUT = (() => {
  // 256 entries, blue - white - red
  const t = new Uint8Array(256 * 3);
  for (let k = 0; k < 256; k++) {
    const s = k / 255 * 2 - 1;
    const a = Math.round(255 * (1 - Math.abs(s)));
    t.set(s < 0 ? [a, a, 255] : [255, a, a], k * 3);
  }
  return t;
})();

/** The straightforward way: float -> symmetric scale -> 256-entry LUT -> RGBA -> putImageData. */
function naive(buffer) {
  const t0 = performance.now();
  const headerLen = new DataView(buffer).getUint16(8, true);
  const [H, W, I, O] = [3, 3, 512, 512];
  const values = new Float32Array(buffer, 10 + headerLen, H * W * I * O);
  let m = 0;
  for (let k = 0; k < values.length; k++) {
    const a = Math.abs(values[k]);
    if (a > m) m = a;
  }
  const width = I * W;
  const height = O * H;
  const img = sized(width, height);
  const d = img.data;
  let p = 0;
  for (let o = 0; o < O; o++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < I; i++) {
        for (let w = 0; w < W; w++, p += 4) {
          const v = values[((h * W + w) * I + i) * O + o];
          const k = Math.max(0, Math.min(255, Math.floor((v / m + 1) * 128))) * 3;
          d[p] = NAIVE_LUT[k];
          d[p + 1] = NAIVE_LUT[k + 1];
          d[p + 2] = NAIVE_LUT[k + 2];
          d[p + 3] = 255;
        }
      }
    }
  }
  ctx.putImageData(img, 0, 0);
  return { total: performance.now() - t0, width, height };
}

window.bench = {
  async load(urls) {
    for (const u of urls) buffers.push(await (await fetch(u)).arrayBuffer());
    for (const b of buffers) tensors.push(parseNpy(b));
    return buffers.length;
  },
  /** Interleaved rounds (ours, naive, ours, naive ...); every round's times. */
  compare(rounds) {
    const out = { ours: [], naive: [] };
    for (let r = 0; r < rounds; r++) {
      const b = buffers[r % buffers.length];
      out.ours.push(ours(b));
      out.naive.push(naive(b));
    }
    return out;
  },
  /**
   * Frames per second while each animation frame draws the next step: `seen` steps
   * come from the dashboard's tensor cache (their limits are remembered); others
   * are parsed from their bytes as if just fetched (limits computed every frame).
   */
  scrub(ms, seen) {
    return new Promise((resolve) => {
      let frames = 0;
      const start = performance.now();
      const frame = () => {
        const i = frames % buffers.length;
        ours(seen ? tensors[i] : buffers[i]);
        frames++;
        if (performance.now() - start < ms) requestAnimationFrame(frame);
        else resolve({ frames, fps: frames / ((performance.now() - start) / 1000) });
      };
      requestAnimationFrame(frame);
    });
  },
};
document.title = "ready";
