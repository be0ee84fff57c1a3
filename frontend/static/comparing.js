// Comparing runs trained apart: "Align to <base run>" fetches the align route's
// match for each compared run's kernel (align.js reorders the tensor), and the
// aligned rows' cosines go into the tooltip. The Similarity view is similarity.js.

import * as api from "./api.js";
import { el, fmt } from "./dom.js";

/**
 * Composed by the Dashboard (app.js) as `dashboard.comparing`. Its interface,
 * `host`: state() -> the URL state (read only); info(run, tag) -> the tag's
 * metadata in that run ({} when absent). Holds the align answers until clear().
 */
export class Comparing {
  constructor(host) {
    this.host = host;
    this.matches = new Map(); // align route answers by [run, base, tag, step]
  }

  /** Forgets the align answers (Reload). */
  clear() {
    this.matches.clear();
  }

  /** Whether `run`'s panel is reordered to the base run. */
  aligning(run) {
    const s = this.host.state();
    return s.align && run !== s.base && s.compare.length > 0 && this.host.info(run, s.tag).kind === "kernel"
      && Boolean(this.host.info(s.base, s.tag).kind);
  }

  /** The align route's answer for `run` at `step` (cached until Reload). */
  match(run, step) {
    const s = this.host.state();
    const key = JSON.stringify([run, s.base, s.tag, step]);
    if (!this.matches.has(key)) {
      const p = api.align(run, s.base, s.tag, step);
      p.catch(() => this.matches.delete(key));
      this.matches.set(key, p);
    }
    return this.matches.get(key);
  }

  /** Tooltip lines of an aligned panel's tile: the base filter it was matched to and the cosine. */
  alignHover(panel, hit) {
    if (!panel.loaded || !panel.loaded.tensor.match) return null;
    const { grid, tensor } = panel.loaded;
    const f = grid.filterOf(hit.r, hit.c);
    const cos = tensor.match.cosine[f];
    return [el("div", { class: "align-hover" },
      `matched to ${this.host.state().base}'s filter ${f}, cosine ${cos === null || cos === undefined ? "–" : fmt(cos, 4)}`)];
  }

  /** The title of an aligned panel: mean cosine, aligned and not. */
  alignTitle(title, match) {
    return `${title ? `${title}; ` : ""}aligned to ${this.host.state().base}: mean cosine ${fmt(match.mean_cosine, 3)} `
      + `(${fmt(match.unaligned_mean_cosine, 3)} unaligned)${match.chained ? ", input channels too" : ""}`;
  }
}
