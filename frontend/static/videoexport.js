// The "Export video" button: records the shown layer over its steps as a WebM in the
// browser (canvas.captureStream + MediaRecorder), each step drawn by the tab's own
// renderer (render.js) at one colour scale over the steps, then offers the file.

import { isSigned, lut } from "./colormap.js";
import { el, fmt } from "./dom.js";
import { IMAGE_KINDS } from "./layout.js";
import { cellLimits, limitsFromStats } from "./normalize.js";
import { renderGrid } from "./render.js";
import { fileName, frameLayout, LABEL_BAND, pickMime, stepLabel } from "./videoframes.js";

/** Frames per second of the export: each step is shown this long. */
export const FPS = 4;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Composed by the Dashboard (app.js) as `dashboard.videoExport`. Its interface, `host`:
 * state() -> the URL state (read only); stepsOf(run) -> the run's logged steps of the
 * tag, ascending; load(step) -> what the first panel draws at `step` (loader.js
 * loadPanel: {grid, values, tensor} or {error}); stats(run, tag) -> the stats route's
 * answer; info(run, tag) -> the tag's metadata; dark() -> the theme.
 * Its node holds the button, the progress bar, a status line and the download link.
 */
export class VideoExport {
  constructor(host) {
    this.host = host;
    this.button = el("button", { type: "button", id: "export-video", title: "Record the shown layer over its steps as a WebM video (one scale over the steps)", onclick: () => this.record() }, "Export video");
    this.progress = el("progress", { id: "export-progress", max: "1", value: "0", hidden: true });
    this.status = el("span", { id: "export-status", class: "ctl-label" });
    this.link = el("a", { id: "export-download", hidden: true });
    this.node = el("span", { class: "video-export" }, this.button, this.progress, this.status, this.link);
    this.url = null;
  }

  /** Records every step of the shown run's tag; the link offers the file. */
  async record() {
    const s = this.host.state();
    const run = s.run;
    const tag = s.tag;
    const steps = this.host.stepsOf(run).slice();
    if (!steps.length || typeof MediaRecorder === "undefined") {
      this.status.textContent = steps.length ? "this browser cannot record video (no MediaRecorder)" : "no steps to record";
      return;
    }
    this.button.disabled = true;
    this.link.hidden = true;
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = null;
    try {
      const blob = await this.frames(run, tag, steps, s);
      this.url = URL.createObjectURL(blob);
      this.link.href = this.url;
      this.link.download = fileName(run, tag);
      this.link.textContent = `Download ${this.link.download} (${fmt(blob.size / 1024, 3)} kB)`;
      this.link.hidden = false;
      this.status.textContent = `${steps.length} steps recorded`;
    } catch (e) {
      this.status.textContent = `Export failed: ${e.message}`;
    } finally {
      this.button.disabled = false;
      this.progress.hidden = true;
    }
  }

  /** The WebM blob of `steps`, drawn one at a time onto a canvas being recorded. */
  async frames(run, tag, steps, s) {
    const images = IMAGE_KINDS.includes(this.host.info(run, tag).kind) && s.diff === "none";
    const signed = !images && (isSigned(s.cmap) || s.diff !== "none");
    const cmap = images ? "grey" : s.diff !== "none" ? "diverging" : s.cmap;
    // one scale over the steps, as "fixed over steps" (differences: per layer)
    const fixed = images ? [0, 1] : s.diff === "none" ? limitsFromStats([await this.host.stats(run, tag)], s.pct, signed) : null;
    const first = await this.load(steps[0]);
    const layout = frameLayout(first.grid);
    const canvas = el("canvas", { id: "export-canvas", width: layout.width, height: layout.height, hidden: true });
    this.node.append(canvas);
    const ctx = canvas.getContext("2d");
    const draw = (r, i) => this.draw(ctx, layout, r, stepLabel(steps[i], tag, run, i, steps.length), { fixed, cmap, signed, images, p: s.pct });
    draw(first, 0);
    const stream = canvas.captureStream(0);
    const track = stream.getVideoTracks()[0];
    const mimeType = pickMime((t) => MediaRecorder.isTypeSupported(t));
    const recorder = new MediaRecorder(stream, { ...(mimeType ? { mimeType } : {}), videoBitsPerSecond: 8e6 });
    const chunks = [];
    recorder.ondataavailable = (e) => { if (e.data && e.data.size) chunks.push(e.data); };
    const stopped = new Promise((resolve, reject) => {
      recorder.onstop = resolve;
      recorder.onerror = (e) => reject(e.error || new Error("the recorder failed"));
    });
    this.progress.max = String(steps.length);
    this.progress.hidden = false;
    try {
      recorder.start();
      for (let i = 0; i < steps.length; i++) {
        this.progress.value = String(i);
        this.status.textContent = `recording step ${steps[i]} (${i + 1}/${steps.length})…`;
        if (i > 0) draw(await this.load(steps[i]), i);
        track.requestFrame();
        await sleep(1000 / FPS);
      }
      this.progress.value = String(steps.length);
    } finally {
      if (recorder.state !== "inactive") recorder.stop();
      track.stop();
      canvas.remove();
    }
    await stopped;
    return new Blob(chunks, { type: (mimeType || "video/webm").split(";")[0] });
  }

  /** The first panel's data at `step` (exactly that step), or throws. */
  async load(step) {
    const r = await this.host.load(step);
    if (r.error) throw new Error(r.error);
    if (String(r.tensor.step) !== String(step)) throw new Error(`got step ${r.tensor.step} for step ${step}`);
    return r;
  }

  /** One frame: the label band, then the grid as render.js draws it (no panning, no sorting). */
  draw(ctx, layout, r, label, { fixed, cmap, signed, images, p }) {
    const dark = this.host.dark();
    const bg = dark ? [32, 33, 36] : [255, 255, 255];
    const sep = dark ? [72, 74, 78] : [200, 200, 200];
    const { width, height } = ctx.canvas;
    ctx.fillStyle = `rgb(${bg.join(",")})`;
    ctx.fillRect(0, 0, width, height);
    const limits = cellLimits(r.grid, r.values, fixed ? { mode: "steps", fixed, p, signed } : { mode: "layer", p, signed });
    const w = width;
    const h = height - LABEL_BAND;
    const img = ctx.createImageData(w, h);
    const view = { zoom: layout.zoom, panX: 0, panY: 0, rowOrder: null };
    renderGrid(img.data, w, h, r.grid, r.values, limits, lut(cmap, { dark }), view, bg, images ? bg : sep);
    ctx.putImageData(img, 0, LABEL_BAND);
    ctx.fillStyle = dark ? "#e8eaed" : "#000";
    ctx.font = "13px sans-serif";
    ctx.textBaseline = "middle";
    ctx.fillText(label, 4, LABEL_BAND / 2, width - 8);
  }
}
