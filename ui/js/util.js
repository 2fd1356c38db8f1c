// Small helpers every page shares: building elements, formatting numbers as the CLI and the
// study table do, statuses told in words (never by colour alone).

/** h("a", {href, class, onclick}, ...children): an element; null/false children are skipped. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

export const TERMINAL = new Set(["succeeded", "failed", "cancelled", "diverged", "pruned"]);
export const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled", "diverged", "pruned"];
const SYMBOLS = {
  queued: "◷", running: "▶", succeeded: "✓", failed: "✗", cancelled: "■", diverged: "⚠", pruned: "✂",
  finished: "✓",
};

/** A status as a symbol and its word; the colour only repeats what the text says. */
export function statusBadge(status) {
  return h("span", { class: `status status-${status}` }, h("span", { "aria-hidden": "true" }, SYMBOLS[status] || "•"), " ", status);
}

/** Python's `round`-to-even at exact ties, as the API's own formatting does (f"{x:.1f}"). */
export function fixed(x, digits) {
  const scaled = x * 10 ** digits;
  if (Math.abs(scaled - Math.trunc(scaled)) === 0.5) {
    const floor = Math.floor(scaled);
    const even = floor % 2 === 0 ? floor : floor + 1;
    return (even / 10 ** digits).toFixed(digits);
  }
  return x.toFixed(digits);
}

/** Python's f"{x:g}". */
export function pyG(x) {
  if (x === 0) return "0";
  const exponent = Math.floor(Math.log10(Math.abs(x)));
  if (exponent < -4 || exponent >= 6) {
    const [mantissa, exp] = x.toExponential(5).split("e");
    const m = mantissa.includes(".") ? mantissa.replace(/0+$/, "").replace(/\.$/, "") : mantissa;
    const e = Number(exp);
    return `${m}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
  }
  return String(Number(x.toPrecision(6)));
}

/** A metric as people read it: accuracies in percent, RMSE in units, losses with 4 digits. */
export function fmtMetric(key, value) {
  if (value === null || value === undefined) return "-";
  if (typeof value !== "number") return String(value);
  if (key.includes("accuracy") || key.startsWith("within")) return `${fixed(100 * value, 1)}%`;
  if (key.includes("rmse") || key.includes("mae")) return Math.round(value).toLocaleString("en-US");
  return Math.abs(value) >= 1000 ? Math.round(value).toLocaleString("en-US") : Number(value.toPrecision(4)).toString();
}

export const fmtInt = (n) => (n === null || n === undefined ? "-" : Number(n).toLocaleString("en-US"));

export function fmtDate(iso) {
  if (!iso) return "-";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** The validation metrics the experiment serves (`metrics.served`), else its best epoch's. */
export function servedMetrics(experiment) {
  const m = experiment.metrics || {};
  return m.served || m.best || null;
}

/** "val_accuracy 100.0% (epoch 159)" from a metrics object with `epoch`. */
export function metricText(metrics, withEpoch = false) {
  if (!metrics) return "-";
  const parts = Object.entries(metrics)
    .filter(([k]) => k.startsWith("val_") && k !== "val_loss")
    .map(([k, v]) => `${k} ${fmtMetric(k, v)}`);
  if (!parts.length && metrics.val_loss !== undefined) parts.push(`val_loss ${fmtMetric("val_loss", metrics.val_loss)}`);
  return parts.join(", ") + (withEpoch && metrics.epoch ? ` (epoch ${metrics.epoch})` : "");
}

/** A message area: role=alert for refusals, role=status for news. */
export function message(text, kind = "error") {
  return h("p", { class: `message message-${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

/** A table in a horizontally scrolling frame, so a narrow screen scrolls it rather than the page. */
export function tableFrame(table, label) {
  return h("div", { class: "table-frame", role: "region", "aria-label": label, tabindex: "0" }, table);
}
