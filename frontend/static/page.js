// The page around the dashboard: the state in the iframe's URL hash, mirrored
// into TensorBoard's page URL ("#convfilters&cf=<state>") while the Filters
// tab is shown, the link to share, and TensorBoard's light or dark theme.

import { encode } from "./state.js";

const PARENT_KEY = "cf";

/** The state mirrored into TensorBoard's hash ("#convfilters&cf=..."), or null. */
export function parentState() {
  try {
    const hash = window.parent !== window ? window.parent.location.hash : "";
    if (!/^#convfilters(&|$)/.test(hash)) return null;
    return new URLSearchParams(hash.replace(/^#[^&]*&?/, "")).get(PARENT_KEY);
  } catch {
    return null;
  }
}

/** The state to start from: the iframe's own hash, else the one mirrored into TensorBoard's URL. */
export function initialHash() {
  if (location.hash.length > 1) return location.hash;
  return parentState() || "";
}

/**
 * Writes `state` into the iframe's hash and, while the Filters tab is the
 * one shown (TensorBoard's hash starts with "#convfilters"), mirrors it as
 * "#convfilters&cf=<state>", which TensorBoard keeps, so the page URL is a
 * shareable link and survives a reload.
 */
export function writeHash(state) {
  const hash = encode(state);
  const here = `${location.pathname}${location.search}#${hash}`;
  if (location.hash.replace(/^#/, "") !== hash) history.replaceState(null, "", here);
  try {
    const p = window.parent;
    if (p === window || !/^#convfilters(&|$)/.test(p.location.hash)) return;
    const want = `#convfilters&${PARENT_KEY}=${encodeURIComponent(hash)}`;
    if (p.location.hash !== want) p.history.replaceState(p.history.state, "", `${p.location.pathname}${p.location.search}${want}`);
  } catch {
    // not same-origin: the iframe's own hash and "copy link" still work
  }
}

/** TensorBoard's page URL (which carries the mirrored state), else the iframe's. */
export function shareLink() {
  try {
    if (window.parent !== window) return window.parent.location.href;
  } catch {
    // fall through
  }
  return location.href;
}

/**
 * Calls `onOwn()` when the iframe's hash changes and `onParent()` when
 * TensorBoard's does (a shared link pasted while the dashboard is open only
 * changes TensorBoard's hash).
 */
export function watchHash(onOwn, onParent) {
  window.addEventListener("hashchange", onOwn);
  try {
    if (window.parent !== window) window.parent.addEventListener("hashchange", onParent);
  } catch {
    // not same-origin
  }
}

/**
 * Calls `apply(dark)` now and whenever the theme may have changed: TensorBoard's
 * "dark-mode" body class when the parent page is readable, else prefers-color-scheme.
 */
export function watchTheme(apply) {
  const media = window.matchMedia("(prefers-color-scheme: dark)");
  const check = () => {
    let dark = media.matches;
    try {
      if (window.parent !== window) dark = window.parent.document.body.classList.contains("dark-mode");
    } catch {
      // cross-origin parent: prefers-color-scheme only
    }
    apply(dark);
  };
  check();
  media.addEventListener("change", check);
  try {
    if (window.parent !== window) {
      new MutationObserver(check).observe(window.parent.document.body, { attributes: true, attributeFilter: ["class"] });
    }
  } catch {
    // cross-origin parent
  }
}
