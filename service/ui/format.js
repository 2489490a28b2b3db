// Number, size and time formats shared by the views.

export const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);
export const STATUSES = [
  "PENDING",
  "STARTING",
  "RUNNING",
  "RESIZING",
  "RECOVERING",
  "SUCCEEDED",
  "FAILED",
  "CANCELLED",
];

/** Bytes in decimal units, as the CLI writes them: "812 B", "1.5 MB". */
export function bytes(n) {
  if (n === null || n === undefined || !Number.isFinite(n)) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${Math.round(value)} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** A measurement to 4 significant digits, without trailing zeros. */
export function num(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  if (v !== 0 && (Math.abs(v) >= 1e6 || Math.abs(v) < 1e-4)) return v.toExponential(3);
  return String(Number(v.toPrecision(4)));
}

/** An integer with thousands separators. */
export function count(v) {
  return Number.isFinite(v) ? Math.round(v).toLocaleString("en-US") : "–";
}

/** An axis tick: short forms for large values. */
export function tick(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return `${Number((v / 1e9).toPrecision(3))}G`;
  if (a >= 1e6) return `${Number((v / 1e6).toPrecision(3))}M`;
  if (a >= 1e4) return `${Number((v / 1e3).toPrecision(3))}k`;
  return String(Number(v.toPrecision(3)));
}

export function bytesTick(v) {
  return v === 0 ? "0" : bytes(v).replace(".0 ", " ");
}

export function percent(v) {
  return Number.isFinite(v) ? `${(100 * v).toFixed(1)}%` : "–";
}

/** Seconds as "42 s", "7 min", "3.5 h", "2 d". */
export function duration(seconds) {
  if (!Number.isFinite(seconds)) return "–";
  const s = Math.max(0, seconds);
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

export function since(iso) {
  return iso ? (Date.now() - Date.parse(iso)) / 1000 : NaN;
}

export function clock(iso) {
  const d = new Date(iso);
  return d.toLocaleTimeString("en-GB", { hour12: false });
}

/** Dense coordinates per coordinate sent (1 / density): "×100". */
export function compression(density) {
  if (!Number.isFinite(density) || density <= 0) return "–";
  return `×${num(1 / density)}`;
}

/** A one-line description of a spec: model, data, compression, workers, steps. */
export function specLine(spec) {
  const c = spec.compression || {};
  const parts = [c.kind];
  if (c.ratio !== undefined && c.ratio !== null) parts.push(`ratio ${c.ratio}`);
  if (c.k !== undefined && c.k !== null) parts.push(`k ${c.k}`);
  const w = spec.workers || {};
  const lo = w.min ?? w.count;
  const hi = w.max ?? w.count;
  const workers = lo < hi ? `${w.count} workers (${lo}–${hi})` : `${w.count} workers`;
  return [
    `${spec.model?.kind} on ${spec.data?.kind}`,
    parts.join(" "),
    workers,
    spec.steps ? `${count(spec.steps)} steps` : `${spec.epochs} epochs`,
  ].join(" · ");
}

export function isElastic(spec) {
  const w = spec.workers || {};
  return (w.min ?? w.count) < (w.max ?? w.count) && spec.exchange?.mode !== "async";
}
