// Talking to the plugin's routes and decoding .npy bytes.
//
// URLs are relative: the dashboard's document has <base href="plugin/convfilters/">.

/**
 * An error answered by the server ({"error": ...}) or a failed request.
 * `body` is the parsed JSON error body (e.g. a 413's {error, nbytes, limit_bytes}), or null.
 */
export class ApiError extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** `path?k=v&...` with every value URI-encoded (undefined/null values left out). */
export function url(path, params = {}) {
  const q = Object.entries(params)
    .filter(([, v]) => v !== undefined && v !== null)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
    .join("&");
  return q ? `${path}?${q}` : path;
}

async function check(resp) {
  if (resp.ok) return resp;
  let message = `${resp.status} ${resp.statusText}`;
  let json = null;
  try {
    const body = await resp.text();
    try {
      const parsed = JSON.parse(body);
      if (parsed && typeof parsed.error === "string") {
        message = parsed.error;
        json = parsed;
      }
    } catch {
      if (body) message = `${message}: ${body.slice(0, 300)}`;
    }
  } catch {
    // keep the status line
  }
  throw new ApiError(resp.status, message, json);
}

async function request(path, params, init) {
  let resp;
  try {
    resp = await fetch(url(path, params), init);
  } catch (e) {
    throw new ApiError(0, `cannot reach TensorBoard (${e.message || e})`);
  }
  return check(resp);
}

export async function getJSON(path, params = {}, init = {}) {
  return (await request(path, params, init)).json();
}

export const tags = (init) => getJSON("tags", {}, init);

/**
 * The `tags` answer and whether the server is still indexing (X-Convfilters-Indexing: runs
 * not indexed yet are missing; ask again soon). `response`: a promise of the `fetch("tags")`
 * started before this module loaded (index.js), or null to ask now.
 */
export async function tagsAnswer(response = null) {
  let resp;
  try {
    resp = await (response || fetch("tags"));
  } catch (e) {
    throw new ApiError(0, `cannot reach TensorBoard (${e.message || e})`);
  }
  await check(resp);
  return { tags: await resp.json(), indexing: resp.headers.get("X-Convfilters-Indexing") === "1" };
}
export const steps = (run, tag, init) => getJSON("steps", { run, tag }, init);
/**
 * Per-filter stats: {names, steps, total_steps, capped}; at most `maxSteps` steps (the
 * server's default 500 when undefined) spread over the series, plus `step` when given.
 */
export const stats = (run, tag, init, { maxSteps, step } = {}) =>
  getJSON("stats", { run, tag, max_steps: maxSteps, step }, init);
/** The filter doctor's findings for one run: {run, series, thresholds, findings}. */
export const findings = (run, init) => getJSON("findings", { run }, init);
/** `run`'s filters of kernel `tag` matched to `base`'s: {permutation, cosine, channel_permutation, ...}. */
export const align = (run, base, tag, step, init) => getJSON("align", { run, base, tag, step }, init);
/** Linear CKA of activation `tag` between (run, step) pairs: {labels, matrix, note}. */
export const similarity = (tag, runs, steps, init) =>
  getJSON("similarity", { tag, runs: runs.join(","), steps: steps ? steps.join(",") : null }, init);

/** Spectra of kernel `tag` at `step` (latest if undefined): {step, filters, orientation, frequency, counts, ...}. */
export const spectra = (run, tag, step, init) => getJSON("spectra", { run, tag, step }, init);
/** The coverage of kernel `tag` over steps: {steps: [{step, counts, flat, undefined, filters} | {step, error}], ...}. */
export const spectraSteps = (run, tag, maxSteps, init) =>
  getJSON("spectra_steps", { run, tag, max_steps: maxSteps }, init);

/**
 * Training dynamics of kernel `tag`: {steps, updates, intervals, filters, update_ratio,
 * grad_norm, rotation, rotation_filters} (binary arrays: binary.js decodeBinary).
 */
export const dynamics = (run, tag, init) => getJSON("dynamics", { run, tag }, init);
/** Every kernel of `run`'s rotation from its first logged step: {tags, steps, filters, rotation}. */
export const rotation = (run, init) => getJSON("rotation", { run }, init);

/**
 * Dataset examples of activation `tag` at `step`: {step, k, ranked, rows, channels, indices,
 * values, positions, field, input, crops, maps, inputs} (http_api.md); `rows` the filters
 * (all if undefined), `whole` adds each example's whole input.
 */
export const examples = (run, tag, step, { rows, whole } = {}, init) =>
  getJSON("examples", { run, tag, step, rows: rows ? rows.join(",") : null, whole: whole ? 1 : null }, init);

/**
 * One logged tensor: {array, shape, dtype, header, step, buffer}.
 * `step` comes from X-Convfilters-Step (the step actually served, as a string).
 * `maxFilters` / `maxChannels` ask for only the first N filters / M input channels.
 */
export async function tensor(run, tag, step, init = {}, { maxFilters, maxChannels } = {}) {
  const params = { run, tag, step, max_filters: maxFilters, max_channels: maxChannels };
  const resp = await request("tensor", params, init);
  const buffer = await resp.arrayBuffer();
  const npy = parseNpy(buffer);
  let header = {};
  try {
    header = JSON.parse(resp.headers.get("X-Convfilters-Header") || "{}");
  } catch {
    header = {};
  }
  return {
    ...npy,
    header: { ...header, shape: npy.shape },
    step: resp.headers.get("X-Convfilters-Step"),
    buffer,
  };
}

let halfTable = null;

/** Float32 value of every IEEE binary16 bit pattern. */
function halfToFloat() {
  if (halfTable) return halfTable;
  halfTable = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    let v;
    if (exp === 0) v = frac * 2 ** -24;
    else if (exp === 31) v = frac ? NaN : Infinity;
    else v = (1 + frac / 1024) * 2 ** (exp - 15);
    halfTable[h] = sign * v;
  }
  return halfTable;
}

/** Decodes IEEE float16 bits (Uint16Array) into a Float32Array. */
export function decodeFloat16(bits) {
  const table = halfToFloat();
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]];
  return out;
}

const DTYPES = {
  "<f4": ["float32", Float32Array],
  "<f8": ["float64", Float64Array],
  "<f2": ["float16", Uint16Array],
  "|i1": ["int8", Int8Array],
  "|u1": ["uint8", Uint8Array],
  "<i1": ["int8", Int8Array],
  "<u1": ["uint8", Uint8Array],
};

/** Parses the header dict text of a .npy file. */
export function parseNpyHeader(text) {
  const descr = /'descr'\s*:\s*'([^']+)'/.exec(text);
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(text);
  const shape = /'shape'\s*:\s*\(([^)]*)\)/.exec(text);
  if (!descr || !fortran || !shape) throw new Error(`bad .npy header: ${text.slice(0, 200)}`);
  const dims = shape[1].split(",").map((s) => s.trim()).filter((s) => s !== "").map(Number);
  if (dims.some((n) => !Number.isInteger(n) || n < 0)) throw new Error(`bad .npy shape: ${shape[1]}`);
  return { descr: descr[1], fortran: fortran[1] === "True", shape: dims };
}

/**
 * Decodes a .npy file: {array, shape, dtype}. float16 comes back as a
 * Float32Array (exact); other dtypes as their typed array.
 */
export function parseNpy(buffer) {
  const bytes = new Uint8Array(buffer);
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];
  if (bytes.length < 10 || magic.some((b, i) => bytes[i] !== b)) throw new Error("not a .npy file");
  const major = bytes[6];
  const view = new DataView(buffer);
  let headerLen;
  let start;
  if (major === 1) {
    headerLen = view.getUint16(8, true);
    start = 10;
  } else {
    headerLen = view.getUint32(8, true);
    start = 12;
  }
  const text = new TextDecoder("latin1").decode(bytes.subarray(start, start + headerLen));
  const h = parseNpyHeader(text);
  if (h.fortran) throw new Error(".npy in Fortran order is not supported");
  const entry = DTYPES[h.descr];
  if (!entry) throw new Error(`.npy dtype ${h.descr} is not supported`);
  const [dtype, Typed] = entry;
  const count = h.shape.reduce((a, b) => a * b, 1);
  const offset = start + headerLen;
  if (offset + count * Typed.BYTES_PER_ELEMENT > buffer.byteLength) {
    throw new Error(`.npy payload is truncated: need ${count} values of ${h.descr}`);
  }
  const data = offset % Typed.BYTES_PER_ELEMENT === 0
    ? new Typed(buffer, offset, count)
    : new Typed(buffer.slice(offset, offset + count * Typed.BYTES_PER_ELEMENT));
  const array = dtype === "float16" ? decodeFloat16(data) : data;
  return { array, shape: h.shape, dtype };
}
