// Dataset examples as pixels (pure, DOM-free): the one definition the Filters tab
// draws with and tb_convfilters.plot.examples copies.
//
// A value x of the probe inputs becomes t = clip((x - lo) / (hi - lo), 0, 1), with
// [lo, hi] the probe inputs' `range` (hi == lo: t = 0.5). 3 channels: RGB, each
// round(255 t); 1 channel: gray round(255 t); other channel counts: the mean over the
// channels, as gray. Opaque (alpha 255), except crop pixels outside the input (the
// crop's box starts at `start + p * jump` of each spatial axis; outside [0, n) of
// the input): transparent (0, 0, 0, 0).
// Unknown receptive field: the example's map, upsampled to the whole input by
// nearest index (input pixel i takes map index floor(i * map_n / input_n)), drawn
// over it as RGBA (255, 0, 0, round(160 * clip(m / v, 0, 1))) with v the example's
// value; when v <= 0 (or not finite): no overlay (alpha 0).
// Images are H x W (one spatial axis: 1 x W; three: the middle D slice).

/** t of value `x` in [lo, hi] (see the top of this file). */
export function unit(x, lo, hi) {
  if (hi === lo) return 0.5;
  const t = (x - lo) / (hi - lo);
  return t < 0 ? 0 : t > 1 ? 1 : Number.isNaN(t) ? 0 : t;
}

/**
 * The geometry of one image of layout `layout` (an input's layout without N, e.g.
 * "HWC", "CHW", "WC") and `shape`: {h, w, channels, at(y, x, c) -> flat index}.
 */
export function imageGeometry(layout, shape) {
  const strides = [];
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i];
  }
  const ci = layout.indexOf("C");
  const hi = layout.indexOf("H");
  const wi = layout.indexOf("W");
  const di = layout.indexOf("D");
  const base = di >= 0 ? Math.floor(shape[di] / 2) * strides[di] : 0;
  const h = hi >= 0 ? shape[hi] : 1;
  const w = wi >= 0 ? shape[wi] : 1;
  const channels = ci >= 0 ? shape[ci] : 1;
  const sy = hi >= 0 ? strides[hi] : 0;
  const sx = wi >= 0 ? strides[wi] : 0;
  const sc = ci >= 0 ? strides[ci] : 0;
  return { h, w, channels, at: (y, x, c) => base + y * sy + x * sx + c * sc };
}

/** The box of an example at activation `position` (one per spatial axis): {start, size}. */
export function boxOf(field, position) {
  return {
    start: field.start.map((s, i) => s + position[i] * field.jump[i]),
    size: field.size.slice(),
  };
}

/** The (y, x) start of `box` in image terms: the H and W entries of the spatial axes. */
function boxYX(layout, box) {
  const spatial = [...layout].filter((l) => "DHW".includes(l));
  const pick = (letter) => {
    const i = spatial.indexOf(letter);
    return i >= 0 ? [box.start[i], box.size[i]] : [0, 1];
  };
  return { y: pick("H"), x: pick("W") };
}

/**
 * RGBA pixels (Uint8ClampedArray, h * w * 4) of the image at element `offset` of
 * `array` (layout `layout`, shape `shape` without N), scaled by `range` [lo, hi].
 * With `box` and `inputShape` (the whole input's shape, same layout), pixels outside
 * the input are transparent.
 */
export function imagePixels(array, offset, layout, shape, range, { box = null, inputShape = null } = {}) {
  const g = imageGeometry(layout, shape);
  const [lo, hi] = range;
  const out = new Uint8ClampedArray(g.h * g.w * 4);
  let inside = () => true;
  if (box && inputShape) {
    const full = imageGeometry(layout, inputShape);
    const { y, x } = boxYX(layout, box);
    inside = (yy, xx) => {
      const iy = y[0] + yy;
      const ix = x[0] + xx;
      return iy >= 0 && iy < full.h && ix >= 0 && ix < full.w;
    };
  }
  for (let y = 0; y < g.h; y++) {
    for (let x = 0; x < g.w; x++) {
      const o = (y * g.w + x) * 4;
      if (!inside(y, x)) continue; // transparent
      if (g.channels === 3) {
        for (let c = 0; c < 3; c++) out[o + c] = Math.round(255 * unit(array[offset + g.at(y, x, c)], lo, hi));
      } else {
        let sum = 0;
        for (let c = 0; c < g.channels; c++) sum += array[offset + g.at(y, x, c)];
        const v = Math.round(255 * unit(g.channels === 1 ? sum : sum / g.channels, lo, hi));
        out[o] = v;
        out[o + 1] = v;
        out[o + 2] = v;
      }
      out[o + 3] = 255;
    }
  }
  return { width: g.w, height: g.h, data: out };
}

/**
 * The unknown-field overlay: RGBA (h * w * 4) of map `map` (at element `offset`, of
 * spatial shape `mapShape`) upsampled by nearest index to the input's h x w, with
 * `value` the example's value.
 */
export function overlayPixels(map, offset, mapShape, h, w, value) {
  const out = new Uint8ClampedArray(h * w * 4);
  if (!(value > 0) || !Number.isFinite(value)) return { width: w, height: h, data: out };
  // the map's own H x W (one spatial axis: 1 x W; three: the middle D slice)
  let mh = 1;
  let mw = mapShape[mapShape.length - 1];
  let base = 0;
  if (mapShape.length >= 2) mh = mapShape[mapShape.length - 2];
  if (mapShape.length === 3) base = Math.floor(mapShape[0] / 2) * mh * mw;
  for (let y = 0; y < h; y++) {
    const my = Math.floor((y * mh) / h);
    for (let x = 0; x < w; x++) {
      const mx = Math.floor((x * mw) / w);
      const m = map[offset + base + my * mw + mx];
      let a = m / value;
      a = a < 0 || Number.isNaN(a) ? 0 : a > 1 ? 1 : a;
      const o = (y * w + x) * 4;
      out[o] = 255;
      out[o + 3] = Math.round(160 * a);
    }
  }
  return { width: w, height: h, data: out };
}

/** The box of an example in image pixels {y, x, h, w} (for the outline over the whole input). */
export function boxRect(layout, field, position) {
  const { y, x } = boxYX(layout, boxOf(field, position));
  return { y: y[0], x: x[0], h: y[1], w: x[1] };
}
