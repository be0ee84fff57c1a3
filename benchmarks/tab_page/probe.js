// Evaluated inside the dashboard's iframe by benchmarks/tab.py (a function of one
// argument, {op, ...}); reads the dashboard's marks (frontend/static/marks.js) and
// measures the floor: fetch + draw of a tensor with the dashboard's own modules.
async (arg) => {
  // the dashboard's own module instances: from the folder its index.js was served from
  const link = () => document.querySelector('link[rel="modulepreload"]');
  while (!link()) await new Promise((r) => setTimeout(r, 2));
  const served = link().href;
  const mod = (name) => import(new URL(`${name}.js`, served).href);
  const { marks } = await mod("marks");
  const since = (t0, pred, timeout = 30000) => new Promise((resolve, reject) => {
    const start = performance.now();
    const look = () => {
      const found = marks().filter((m) => m.t >= t0 && pred(m));
      if (found.length) return resolve(found[0]);
      if (performance.now() - start > timeout) return reject(new Error(`no mark after ${t0}: ${JSON.stringify(marks().slice(-8))}`));
      setTimeout(look, 2);
    };
    look();
  });
  const settle = () => new Promise((r) => setTimeout(r, arg.settle || 0));
  const dashboard = () => mod("index").then((m) => m.render());
  if (arg.op === "first") {
    // iframe requested (its navigation start is this document's time origin) -> first grid
    const grid = await since(0, (m) => m.name === "grid");
    return { grid: grid.t, marks: marks().filter((m) => m.t <= grid.t + 1) };
  }
  if (arg.op === "forget") {
    // a cold switch: nothing of other tags fetched (tensors, statistics, prefetches)
    const d = await dashboard();
    d.forget();
    return null;
  }
  if (arg.op === "switch" || arg.op === "step") {
    await settle();
    const t0 = performance.now();
    if (arg.op === "switch") {
      const sel = document.querySelector("#tag-select");
      sel.value = arg.tag;
      sel.dispatchEvent(new Event("change"));
    } else {
      const slider = document.querySelector("#step-slider");
      slider.value = String(arg.index);
      slider.dispatchEvent(new Event("input"));
    }
    const grid = await since(t0, (m) => m.name === "grid" && m.tag === arg.tag && (arg.step === undefined || m.step === String(arg.step)));
    const health = arg.health ? await since(t0, (m) => m.name === "health" && m.step !== undefined && m.flags) : null;
    const all = marks().filter((m) => m.t >= t0).map((m) => ({ ...m, t: m.t - t0 }));
    return { grid: grid.t - t0, health: health ? health.t - t0 : null, marks: all };
  }
  if (arg.op === "floor") {
    // fetch + decode + limits + draw of the same tensor onto a canvas the size the dashboard drew
    const api = await mod("api");
    const { canonicalize } = await mod("layout");
    const { cellLimits } = await mod("normalize");
    const { imageFor, renderGrid } = await mod("render");
    const { lut } = await mod("colormap");
    const shown = document.querySelector(`canvas.main-grid[data-tag="${arg.tag}"]`);
    const c = document.createElement("canvas");
    c.width = shown.width;
    c.height = shown.height;
    const view = { zoom: Number(shown.dataset.zoom), panX: 0, panY: 0, rowOrder: null };
    const t0 = performance.now();
    const t = await api.tensor(arg.run, arg.tag, arg.step, { cache: "no-store" });
    const t1 = performance.now();
    const grid = canonicalize(t.header, {});
    const limits = cellLimits(grid, t.array, { mode: "layer", p: 99.5, signed: true });
    const ctx = c.getContext("2d");
    const img = imageFor(ctx, c.width, c.height);
    renderGrid(img.data, c.width, c.height, grid, t.array, limits, lut("diverging"), view, [255, 255, 255], [200, 200, 200]);
    ctx.putImageData(img, 0, 0);
    const t2 = performance.now();
    return { total: t2 - t0, fetch: t1 - t0, draw: t2 - t1, width: c.width, height: c.height };
  }
  throw new Error(`unknown op ${arg.op}`);
}
