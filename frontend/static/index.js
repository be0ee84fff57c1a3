// Entry point: TensorBoard imports this module inside the plugin iframe
// (document base "plugin/convfilters/") and calls render().

import { Dashboard } from "./app.js";

let dashboard = null;

export function render() {
  if (dashboard) return dashboard;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = "static/style.css";
  document.head.append(link);
  dashboard = new Dashboard(document.body);
  dashboard.start();
  return dashboard;
}
