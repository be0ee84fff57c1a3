// Selecting a filter in the dashboard: clicks, the outline in every panel, the
// detail view and health table beside the grids, pattern hovers, shared zoom/pan.

import { filterCells, filterCount, IMAGE_KINDS } from "./layout.js";

/** Part of the Dashboard (app.js): its methods are mixed into Dashboard. */
export class Selection {
  clickCell(panel, hit) {
    const f = panel.loaded ? panel.loaded.grid.filterOf(hit.r, hit.c) : hit.r;
    this.select(f, false);
    this.detail.show(panel, f);
  }

  /** Selects filter `f` everywhere (grid outline, table row); `reveal` scrolls the grids to it. */
  select(f, reveal) {
    this.state.sel = f;
    this.writeHash();
    this.health.select(f);
    for (const p of this.panels) {
      this.highlightPanel(p);
      if (reveal && p.loaded) p.view.reveal(Math.floor(filterCells(p.loaded.grid, f)[0] / p.loaded.grid.cols));
    }
    if (reveal && this.panels[0] && this.panels[0].loaded) this.detail.show(this.panels[0], f);
  }

  highlightPanel(panel) {
    const f = this.state.sel;
    if (!panel.loaded || f === null || f >= filterCount(panel.loaded.grid)) {
      panel.view.setHighlight(null);
      return;
    }
    panel.view.setHighlight(filterCells(panel.loaded.grid, f));
  }

  async updateSide() {
    const s = this.state;
    const first = this.panels[0];
    this.healthBase = null;
    if (!first || !first.loaded) {
      this.health.update(null);
      return;
    }
    const { grid, drift } = first.loaded;
    if (IMAGE_KINDS.includes(grid.kind)) {
      this.health.update({ message: `${grid.kind === "pattern" ? "Patterns" : "Projections"} have no per-filter statistics: `
        + "hover an image for its filter's kernel and statistics." });
      if (this.detail.open) this.detail.refresh();
      return;
    }
    const token = this.token;
    let stats;
    try {
      stats = await this.stats(first.run, s.tag, s.step);
    } catch (e) {
      this.health.update({ message: `Statistics unavailable: ${e.message}` });
      return;
    }
    if (token !== this.token) return;
    const data = {
      stats,
      kind: grid.kind,
      step: s.step,
      drift: drift || null,
      label: (f) => grid.filterLabel(f),
    };
    this.healthBase = { token, data, run: first.run, loaded: first.loaded };
    this.health.selected = s.sel;
    this.applyHealthFlags();
    if (this.detail.open) this.detail.refresh();
  }

  /** Extra tooltip content: an aligned tile's match (comparing.js); for pattern/projection images, their filter's kernel and stats. */
  hoverExtra(panel, hit, view) {
    const aligned = this.alignHover(panel, hit);
    if (aligned) return aligned;
    if (!panel.loaded || !IMAGE_KINDS.includes(panel.loaded.grid.kind)) return null;
    return this.patternHover.nodes(panel, hit, view);
  }

  /** A panel's zoom/pan changed by the user: the other panels follow; a chosen zoom goes into the URL. */
  syncView(source, view) {
    const zoom = source.view.userZoom;
    for (const p of this.panels) {
      if (p !== source && p.view.data) p.view.setView({ zoom: view.zoom, panX: view.panX, panY: view.panY }, zoom);
    }
    if (this.state.zoom !== zoom) {
      this.state.zoom = zoom;
      this.writeHash();
    }
  }
}
