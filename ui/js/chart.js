// Interactive charts on uPlot (vendored, MIT): hover values in the legend, a log toggle, a
// marked epoch, error bars, and data that can grow while the chart is on screen.
import uPlot from "../vendor/uPlot.esm.js";
import { h } from "./util.js";

export const COLORS = ["#1f5fbf", "#c0392b", "#2e8540", "#8e44ad", "#d35400", "#16a085", "#7f8c8d", "#b7950b"];

/** Axis ticks short enough for the axis: 150k, 2.5M, 0.001. */
function compact(v) {
  if (v === null || v === undefined) return "";
  const a = Math.abs(v);
  if (a >= 1e6) return `${Number((v / 1e6).toPrecision(3))}M`;
  if (a >= 1e4) return `${Number((v / 1e3).toPrecision(3))}k`;
  return String(Number(v.toPrecision(3)));
}

/** Values spanning three orders of magnitude or more (a loss that falls, a spike) start on a log scale. */
function wideRange(series) {
  const values = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined);
  if (!values.length || values.some((v) => v <= 0)) return false;
  return Math.max(...values) / Math.min(...values) >= 1000;
}

function width(el) {
  return Math.max(260, Math.floor(el.getBoundingClientRect().width || 600));
}

/**
 * A line chart of `series` ([{label, values}]) against `x`, in a <figure> with a caption and a
 * "log scale" checkbox. `marker` ({x, label}) draws a dashed vertical line (the kept epoch).
 * Returns {figure, update(x, series, marker), destroy()}.
 */
export function lineChart({ title, xLabel = "epoch", x, series, marker = null, logX = false, errors = null, points = false }) {
  const holder = h("div", { class: "chart" });
  const logBox = h("input", { type: "checkbox", class: "log-toggle", checked: !errors && wideRange(series) });
  const caption = h("figcaption", {}, h("span", { class: "chart-title" }, title), " ",
    h("label", { class: "log-label" }, logBox, " log scale"));
  const note = h("p", { class: "chart-note" });
  const figure = h("figure", { class: "chart-figure", "data-quantity": title }, caption, holder, note);
  let plot = null;
  let state = { x, series, marker, errors };

  function draw(u) {
    const ctx = u.ctx;
    ctx.save();
    if (state.errors) {  // vertical bars: mean ± std per point of each series
      state.errors.forEach((errs, si) => {
        if (!errs) return;
        ctx.strokeStyle = COLORS[si % COLORS.length];
        ctx.lineWidth = 1.5 * devicePixelRatio;
        errs.forEach((err, i) => {
          const mean = state.series[si].values[i];
          if (err === null || err === undefined || mean === null) return;
          const px = u.valToPos(state.x[i], "x", true);
          const top = u.valToPos(mean + err, "y", true);
          const bottom = u.valToPos(logBox.checked ? Math.max(mean - err, mean / 10) : mean - err, "y", true);
          ctx.beginPath();
          ctx.moveTo(px, top); ctx.lineTo(px, bottom);
          ctx.moveTo(px - 4, top); ctx.lineTo(px + 4, top);
          ctx.moveTo(px - 4, bottom); ctx.lineTo(px + 4, bottom);
          ctx.stroke();
        });
      });
    }
    if (state.marker && state.marker.x !== null && state.marker.x !== undefined) {
      const px = u.valToPos(state.marker.x, "x", true);
      ctx.strokeStyle = "#333";
      ctx.setLineDash([5 * devicePixelRatio, 4 * devicePixelRatio]);
      ctx.lineWidth = devicePixelRatio;
      ctx.beginPath();
      ctx.moveTo(px, u.bbox.top);
      ctx.lineTo(px, u.bbox.top + u.bbox.height);
      ctx.stroke();
    }
    ctx.restore();
  }

  // Away from the cursor, the legend reads the last point (the latest epoch), not dashes.
  function latest(u = plot) {
    if (u && state.x.length && u.cursor.left < 0) u.setLegend({ idx: state.x.length - 1 });
  }

  function data() {
    return [state.x, ...state.series.map((s) => s.values)];
  }

  function build() {
    if (plot) plot.destroy();
    const opts = {
      width: width(holder),
      height: 240,
      scales: { x: { time: false, distr: logX ? 3 : 1 }, y: { distr: logBox.checked ? 3 : 1 } },
      axes: [{ label: xLabel, values: (u, splits) => splits.map(compact) }, { size: 56, values: (u, splits) => splits.map(compact) }],
      series: [
        { label: xLabel, value: (u, v) => (v === null || v === undefined ? "-" : String(Number(v.toPrecision(6)))) },
        ...state.series.map((s, i) => ({
          label: s.label,
          stroke: COLORS[i % COLORS.length],
          width: 1.5,
          paths: points ? () => null : undefined,
          points: points ? { show: true, size: 8, fill: COLORS[i % COLORS.length] } : undefined,
          value: (u, v) => (v === null || v === undefined ? "-" : Number(v.toPrecision(5)).toString()),
        })),
      ],
      hooks: { draw: [draw], setCursor: [(u) => latest(u)] },
    };
    plot = new uPlot(opts, data(), holder);
    holder.dataset.scale = logBox.checked ? "log" : "linear";
    latest();
    holder.dataset.points = String(state.x.length);
    note.textContent = state.marker && state.marker.x ? state.marker.label : "";
  }

  logBox.addEventListener("change", build);
  const observer = new ResizeObserver(() => {
    if (plot && Math.abs(plot.width - width(holder)) > 4) plot.setSize({ width: width(holder), height: 240 });
  });
  observer.observe(holder);
  // The chart needs its width: build once the figure is in the document.
  requestAnimationFrame(build);

  return {
    figure,
    update(x, series, marker = state.marker, errors = state.errors) {
      const rebuild = series.length !== state.series.length;
      state = { x, series, marker, errors };
      if (!plot || rebuild) build();
      else {
        plot.setData(data());
        latest();
        holder.dataset.points = String(x.length);
        note.textContent = marker && marker.x ? marker.label : "";
      }
    },
    destroy() {
      observer.disconnect();
      if (plot) plot.destroy();
    },
  };
}
