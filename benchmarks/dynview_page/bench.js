// Dynamics raster benchmark page: the dashboard's own DynamicsView (imported, not copied)
// draws a `dynamics` answer (512 filters x 100 intervals) with the doctor's findings, from
// the parsed JSON to the painted canvas.

import { DynamicsView } from "/frontend/static/dynview.js";

const dashboard = {
  state: { run: "run", tag: "conv/kernel", step: 0 },
  panels: [],
  dark: false,
  triage: { openAt: () => {} },
};
const view = new DynamicsView(dashboard);
view.update = async () => {}; // no routes here: the answer is given
document.body.append(view.node);
view.node.open = true; // shown, so that the canvas is painted

const frame = () => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));

window.bench = {
  /** Best-of-`rounds` times (ms): the call alone, and until the frame after it was painted. */
  async draw(answer, findings, rounds) {
    const calls = [];
    const frames = [];
    for (let i = 0; i < rounds; i++) {
      await frame();
      const t0 = performance.now();
      view.showRatios("run", "conv/kernel", answer, findings);
      const t1 = performance.now();
      await frame();
      const t2 = performance.now();
      calls.push(t1 - t0);
      frames.push(t2 - t0);
    }
    const c = view.ratio;
    return { call: Math.min(...calls), frame: Math.min(...frames), width: c.width, height: c.height, marks: JSON.parse(c.dataset.marks).length };
  },
};
document.title = "ready";
