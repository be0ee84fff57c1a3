// Aligning a compared run's kernel to a base run's (pure, DOM-free).
//
// The `align` route answers {permutation, cosine, channel_permutation, ...}: the
// run's filter permutation[i] is matched to the base's filter i, and its input
// channel channel_permutation[j] to the base's channel j. The aligned tensor holds
// the run's filters in the base's order; its header's `filters` / `channels` keep
// their original indices, so tiles are labelled (and hovered) with them.

import { strides } from "./layout.js";

/** A copy of C-order `array` of `shape` whose index i along `axis` holds index perm[i]. */
export function permuteAxis(array, shape, axis, perm) {
  const out = new array.constructor(array.length);
  const st = strides(shape);
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const inner = st[axis];
  const n = shape[axis];
  for (let o = 0; o < outer; o++) {
    const base = o * n * inner;
    for (let i = 0; i < n; i++) {
      const from = base + perm[i] * inner;
      out.set(array.subarray(from, from + inner), base + i * inner);
    }
  }
  return out;
}

function isPermutation(p, n) {
  if (!Array.isArray(p) || p.length !== n) return false;
  const seen = new Uint8Array(n);
  for (const v of p) {
    if (!Number.isInteger(v) || v < 0 || v >= n || seen[v]) return false;
    seen[v] = 1;
  }
  return true;
}

function original(kept, i) {
  return Array.isArray(kept) ? kept[i] : i;
}

/**
 * The tensor ({array, header: {layout, shape, filters?, channels?}, ...}) with its
 * filters (and input channels, when the match has a channel_permutation) in the
 * base run's order, and `match` attached. Depthwise kernels (filter i*M+m reads
 * channel i) move whole channels. Throws when the match does not fit the tensor.
 */
export function alignTensor(tensor, match) {
  const { layout, shape } = tensor.header;
  const header = { ...tensor.header };
  let array = tensor.array;
  if (layout.includes("M")) {
    const I = shape[layout.indexOf("I")];
    const M = shape[layout.indexOf("M")];
    if (!isPermutation(match.permutation, I * M)) throw new Error("the match does not fit this kernel");
    const perm = Array.from({ length: I }, (_, i) => Math.floor(match.permutation[i * M] / M));
    array = permuteAxis(array, shape, layout.indexOf("I"), perm);
    header.filters = perm.map((p) => original(tensor.header.filters, p));
  } else {
    const O = layout.indexOf("O");
    if (!isPermutation(match.permutation, shape[O])) throw new Error("the match does not fit this kernel");
    array = permuteAxis(array, shape, O, match.permutation);
    header.filters = match.permutation.map((p) => original(tensor.header.filters, p));
    const cp = match.channel_permutation;
    if (cp) {
      const I = layout.indexOf("I");
      if (!isPermutation(cp, shape[I])) throw new Error("the channel match does not fit this kernel");
      array = permuteAxis(array, shape, I, cp);
      header.channels = cp.map((c) => original(tensor.header.channels, c));
    }
  }
  return { ...tensor, array, header, match };
}

/** The matched cosine of each grid row (a filter, or a depthwise channel: its filters' mean). */
export function rowCosines(match, rows) {
  const cos = match.cosine;
  const per = Math.max(1, Math.round(cos.length / rows));
  return Array.from({ length: rows }, (_, r) => {
    const part = cos.slice(r * per, (r + 1) * per).filter((v) => v !== null);
    return part.length ? part.reduce((a, b) => a + b, 0) / part.length : null;
  });
}

/** The short text shown on each aligned row: its matched cosine. */
export function rowNote(cosine) {
  return cosine === null || cosine === undefined ? "cos –" : `cos ${cosine.toFixed(2)}`;
}
