// Dataset examples beside the grids (Show: examples): which activation's examples
// a panel's tag draws, each panel's strips at the shown step and the detail view's
// examples of its filter.

import { examplesSource, storedRow } from "./examplerows.js";
import { ExampleDetail, ExampleStrips } from "./examplesview.js";
import { filterCount } from "./layout.js";

/**
 * Made by the Dashboard (app.js) as `dashboard.examples`; reads the dashboard:
 * state, tags, panels (their strips, `panel.examples`, and what they drew), info(run, tag)
 * and detail (the DetailView, whose node holds the example detail).
 */
export class ShownExamples {
  constructor(dashboard) {
    this.d = dashboard;
    this.detail = new ExampleDetail();
    dashboard.detail.node.append(this.detail.node);
  }

  /** The strips of a new panel. */
  strips(panel) {
    return new ExampleStrips({ onWidth: () => this.fitBeside(panel) });
  }

  /** With Show: examples, the activation whose examples `run`'s shown tag draws ({tag, rows}, examplerows.js), else null. */
  source(run) {
    const s = this.d.state;
    return s.examples ? examplesSource(s.tag, this.d.tags[run]) : null;
  }

  /** Room right of `panel`'s grid for its strips; a kernel's filters one a line, so each strip sits beside its row. */
  fitBeside(panel) {
    const source = this.source(panel.run);
    panel.view.setBeside(source ? panel.examples.width() : 0, Boolean(source && source.rows));
  }

  /** Each panel's dataset examples at the shown step (`results`: loadPanel's, per panel): beside a kernel's rows, else a list of channels. */
  show(results) {
    const s = this.d.state;
    this.d.panels.forEach((panel, i) => {
      const result = results[i];
      const source = this.source(panel.run);
      if (!source || !result || result.error || !result.grid) {
        panel.examples.hide();
        return;
      }
      const grid = result.grid;
      const actInfo = this.d.info(panel.run, source.tag);
      if (source.rows && grid.rowFilters) {
        panel.examples.showRows(panel.run, source.tag, s.step, actInfo, panel.view);
        return;
      }
      const labels = Array.from({ length: filterCount(grid) }, (_, f) => grid.filterLabel(f));
      panel.examples.showList(panel.run, source.tag, s.step, labels, actInfo);
    });
    this.showDetail();
  }

  /** The detail view's examples of its filter (from a kernel: its layer's activation's channel), when Show: examples is on. */
  showDetail() {
    const detail = this.d.detail;
    const target = detail.open ? detail.target : null;
    const source = target ? this.source(target.run) : null;
    const panel = source ? this.d.panels.find((p) => p.run === target.run) : null;
    const grid = panel && panel.loaded ? panel.loaded.grid : null;
    const label = grid ? grid.filterLabel(target.f) : null;
    const row = grid ? storedRow(label, this.d.info(target.run, source.tag)) : -1;
    if (row < 0) {
      this.detail.close();
      return;
    }
    const what = grid.kind === "kernel" ? `filter ${label} (channel ${label} of ${source.tag})` : `channel ${label}`;
    this.detail.show(target.run, source.tag, this.d.state.step, row, what);
  }
}
