// Entry point: TensorBoard imports this module inside the plugin iframe
// (document base "plugin/convfilters/") and calls render().
//
// It is served from static/<version>/ (a new address whenever a file changes), so the
// browser keeps the dashboard's files between visits; its links are relative to it.
// It imports nothing itself, so render() runs as soon as this file is here: it asks
// `tags` at once and tells the browser every module the dashboard imports (one round
// of requests instead of one per level of imports) while app.js loads.

// Every module app.js imports, directly or not (frontend/test/modules.test.mjs checks the list).
export const MODULES = [
  "align", "analysis", "api", "app", "binary", "cache", "cka", "colormap", "comparing", "controls",
  "detail", "doctorview", "dom", "dynraster", "dynview", "examplepixels", "examplerows", "examplesshown", "examplesview", "findings", "gridcanvas",
  "gridview", "health", "layout", "loader", "marks", "normalize", "overlay", "page", "panel", "patterns",
  "prefetch", "render", "selection", "similarity", "spectra", "spectraview", "state", "triage",
  "videoexport", "videoframes",
];

let dashboard = null;

export function render() {
  if (dashboard) return dashboard;
  performance.mark("convfilters:entry");
  const tags = fetch("tags");
  tags.catch(() => {}); // the dashboard reports it
  for (const name of MODULES) {
    const link = document.createElement("link");
    link.rel = "modulepreload";
    link.href = new URL(`${name}.js`, import.meta.url).href;
    document.head.append(link);
  }
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = new URL("style.css", import.meta.url).href;
  document.head.append(link);
  dashboard = import("./app.js").then(({ Dashboard }) => {
    const d = new Dashboard(document.body);
    d.start(tags);
    return d;
  });
  return dashboard;
}
