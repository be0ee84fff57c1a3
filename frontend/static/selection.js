// Selecting a filter in the dashboard: clicks, the outline in every panel, the
// detail view and health table row beside the grids, shared zoom/pan.

import { filterCells, filterCount } from "./layout.js";

/**
 * Composed by the Dashboard (app.js) as `dashboard.selection`. Its interface,
 * `host`: state() -> the URL state (sets `sel` and `zoom`); panels() -> the
 * shown Panels; writeHash() (the state changed); detail (DetailView: show);
 * health (HealthTable: select).
 */
export class Selection {
  constructor(host) {
    this.host = host;
  }

  clickCell(panel, hit) {
    const f = panel.loaded ? panel.loaded.grid.filterOf(hit.r, hit.c) : hit.r;
    this.select(f, false);
    this.host.detail.show(panel, f);
  }

  /** Selects filter `f` everywhere (grid outline, table row); `reveal` scrolls the grids to it. */
  select(f, reveal) {
    const h = this.host;
    h.state().sel = f;
    h.writeHash();
    h.health.select(f);
    const panels = h.panels();
    for (const p of panels) {
      this.highlightPanel(p);
      if (reveal && p.loaded) p.view.reveal(Math.floor(filterCells(p.loaded.grid, f)[0] / p.loaded.grid.cols));
    }
    if (reveal && panels[0] && panels[0].loaded) h.detail.show(panels[0], f);
  }

  highlightPanel(panel) {
    const f = this.host.state().sel;
    if (!panel.loaded || f === null || f >= filterCount(panel.loaded.grid)) {
      panel.view.setHighlight(null);
      return;
    }
    panel.view.setHighlight(filterCells(panel.loaded.grid, f));
  }

  /** A panel's zoom/pan changed by the user: the other panels follow; a chosen zoom goes into the URL. */
  syncView(source, view) {
    const zoom = source.view.userZoom;
    for (const p of this.host.panels()) {
      if (p !== source && p.view.data) p.view.setView({ zoom: view.zoom, panX: view.panX, panY: view.panY }, zoom);
    }
    const s = this.host.state();
    if (s.zoom !== zoom) {
      s.zoom = zoom;
      this.host.writeHash();
    }
  }
}
