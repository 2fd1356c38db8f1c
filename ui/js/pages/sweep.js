// Sweeps: the list, and one sweep's page: its study table (the same cells as
// GET /sweeps/{id}/table?format=markdown), a compare chart (the swept parameter on x, error bars
// over repeats), members' statuses live over the sweep's SSE stream, overlaid learning curves of
// the members selected, and cancel.
import { api, streamEvents } from "../api.js";
import { lineChart } from "../chart.js";
import { fixed, fmtDate, fmtInt, h, message, pyG, statusBadge, tableFrame } from "../util.js";

const X_CANDIDATES = ["lr", "bs", "ep", "hidlay", "neur", "convlay", "ks", "par"];

/** A table cell as the API's markdown writes it (api/services/sweep_tables.py table_markdown). */
export function cell(column, row, metrics) {
  const value = row[column];
  if (metrics.includes(column)) {
    if (value === null || value === undefined) return "-";
    const std = row[`${column}_std`];
    const hasStd = std !== null && std !== undefined;
    if (column.startsWith("val_accuracy")) return hasStd ? `${fixed(100 * value, 1)} ± ${fixed(100 * std, 1)}%` : `${fixed(100 * value, 1)}%`;
    return hasStd ? `${fixed(value, 0)} ± ${fixed(std, 0)}` : fixed(value, 0);
  }
  if (column === "best") return value ? "✓" : "";
  if (column === "lr" && typeof value === "number" && !Number.isInteger(value)) return pyG(value);
  if (value === null || value === undefined) return "-";
  if (typeof value === "boolean") return String(value);
  return String(value);
}

export function renderList(ctx) {
  const { main } = ctx;
  const body = h("tbody");
  const notice = h("div");
  main.append(h("h1", {}, "Sweeps"), notice, tableFrame(h("table", { class: "data", id: "sweeps" },
    h("thead", {}, h("tr", {}, ["name", "status", "members", "by status", "created"].map((c) => h("th", { scope: "col" }, c)))), body), "Sweeps table"));
  api("/sweeps?limit=100").then((page) => {
    body.replaceChildren(...page.items.map((s) => h("tr", {},
      h("td", {}, h("a", { href: `/ui/sweeps/${s.id}`, "data-link": true }, s.name), h("div", { class: "muted mono" }, s.id)),
      h("td", {}, statusBadge(s.status)), h("td", { class: "num" }, s.size),
      h("td", {}, Object.entries(s.counts).map(([k, n]) => `${n} ${k}`).join(", ")),
      h("td", { class: "nowrap" }, fmtDate(s.created_at)))));
    if (!page.items.length) body.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No sweeps yet: post one with a `base` in the editor.")));
  }).catch((error) => notice.replaceChildren(message(error.message)));
}

export function render(ctx, id) {
  const { main } = ctx;
  let sweep = null;
  let table = null;
  const members = new Map();  // experiment_id → latest `experiment` event
  const selected = new Set();
  const stops = [];
  let tableTimer = null;
  let compare = null;
  let overlay = null;
  let stopped = false;
  let membersPending = false;

  const head = h("div", { class: "page-head" });
  const notice = h("div");
  const tableSection = h("section", { "aria-labelledby": "h-table" });
  const compareSection = h("section", { "aria-labelledby": "h-compare" }, h("h2", { id: "h-compare" }, "Compare"));
  const membersSection = h("section", { "aria-labelledby": "h-members" });
  const overlaySection = h("section", { "aria-labelledby": "h-overlay" }, h("h2", { id: "h-overlay" }, "Learning curves of the selected members"),
    h("p", { class: "muted", id: "overlay-empty" }, "Select members above to overlay their validation curves."));
  main.append(head, notice, tableSection, compareSection, membersSection, overlaySection);

  async function load() {
    try {
      sweep = await api(`/sweeps/${id}`);
    } catch (error) {
      notice.replaceChildren(message(error.status === 404 ? `No sweep ${id} (for this key).` : error.message));
      return;
    }
    drawHead();
    await loadTable();
    stops.push(streamEvents(`/sweeps/${id}/events`, {
      onEvent(ev) {
        if (ev.event === "experiment") {
          const before = members.get(ev.data.experiment_id);
          members.set(ev.data.experiment_id, ev.data);
          if (!membersPending) {  // a reconnect sends every member at once: draw once per frame
            membersPending = true;
            requestAnimationFrame(() => { membersPending = false; if (!stopped) drawMembers(); });
          }
          if (!before || before.status !== ev.data.status) scheduleTable();
        } else if (ev.event === "status") {
          Object.assign(sweep, { status: ev.data.status, counts: ev.data.counts });
          drawHead();
        }
      },
      onError: (error) => notice.replaceChildren(message(`Live statuses stopped: ${error.message}`)),
      again: () => sweep.status === "running",
    }));
  }

  // Drawn once; a status event updates the line and the button in place (focus stays where it is).
  const statusLine = h("p", { id: "sweep-status" });
  const cancelButton = h("button", { type: "button", id: "cancel-sweep", onclick: () => cancel() }, "Cancel sweep");
  function drawHead() {
    if (!head.firstChild) {
      head.append(
        h("div", {}, h("h1", {}, sweep.name), h("p", { class: "muted mono" }, sweep.id), statusLine),
        h("div", { class: "actions" }, cancelButton,
          h("a", { class: "button", href: `/ui/?sweep=${sweep.id}`, "data-link": true }, "Members in the experiments table")));
    }
    const counts = Object.entries(sweep.counts).map(([k, n]) => `${n} ${k}`).join(", ");
    statusLine.replaceChildren(statusBadge(sweep.status), ` · ${sweep.size} members · ${counts || "none yet"}`);
    cancelButton.hidden = sweep.status !== "running";
  }

  async function cancel() {
    try {
      sweep = await api(`/sweeps/${id}/cancel`, { method: "POST" });
      drawHead();
    } catch (error) {
      notice.replaceChildren(message(error.message));
    }
  }

  function scheduleTable() {  // statuses arrive in bursts: one table read per second at most
    if (!tableTimer && !stopped) tableTimer = setTimeout(() => { tableTimer = null; loadTable(); }, 1000);
  }

  async function loadTable() {
    try {
      table = await api(`/sweeps/${id}/table`);
    } catch (error) {
      notice.replaceChildren(message(error.message));
      return;
    }
    if (stopped) return;
    drawTable();
    drawCompare();
  }

  function metricColumns() {
    return table.columns.filter((c) => (c.startsWith("val_accuracy") || c === "val_rmse") && !/_(mean|std)$/.test(c));
  }

  function drawTable() {
    const metrics = metricColumns();
    const hidden = new Set(metrics.flatMap((m) => [`${m}_mean`, `${m}_std`]));
    if (sweep.repeats === 1) hidden.add("n");
    if (!table.rows.some((r) => r.test_evaluations)) hidden.add("test_evaluations");
    const columns = table.columns.filter((c) => !hidden.has(c));
    const numeric = (c) => !["name", "opt", "act", "loss", "status", "best", "neur"].includes(c);
    tableSection.replaceChildren(h("h2", { id: "h-table" }, "Study table"),
      h("p", { class: "muted" }, `Validation metrics${sweep.repeats > 1 ? `, mean ± std over ${sweep.repeats} repeats` : ""}; ✓ marks the best row (ranked by ${table.metric || "-"}).`),
      tableFrame(h("table", { class: "data", id: "sweep-table" },
        h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: numeric(c) ? "num" : null }, c === "test_evaluations" ? "tests" : c)))),
        h("tbody", {}, table.rows.map((row) => h("tr", { class: row.best ? "best" : null },
          columns.map((c) => {
            const text = cell(c, row, metrics);
            if (c === "name") return h("td", {}, h("a", { href: `/ui/experiments/${row.experiment_ids[0]}`, "data-link": true }, text));
            if (c === "best") return h("td", { "aria-label": row.best ? "best row" : null }, text);
            return h("td", { class: numeric(c) ? "num" : null }, text);
          }))))), "Study table"));
  }

  function drawCompare() {
    const metric = table.metric;
    if (!metric || !table.rows.length) return;
    const differs = (c) => new Set(table.rows.map((r) => r[c])).size > 1;
    const column = X_CANDIDATES.find((c) => table.rows.every((r) => typeof r[c] === "number") && differs(c));
    const rows = [...table.rows];
    if (column) rows.sort((a, b) => a[column] - b[column]);
    const x = rows.map((r, i) => (column ? r[column] : i + 1));
    const scale = metric.startsWith("val_accuracy") ? 100 : 1;
    const values = rows.map((r) => (r[metric] === null ? null : r[metric] * scale));
    const errors = rows.map((r) => (r[`${metric}_std`] === null || r[`${metric}_std`] === undefined ? null : r[`${metric}_std`] * scale));
    const series = [{ label: `${metric}${scale === 100 ? " (%)" : ""}`, values }];
    const xLabel = column || "row";
    if (!compare || compare.xLabel !== xLabel) {
      if (compare) compare.chart.destroy();
      compareSection.replaceChildren(h("h2", { id: "h-compare" }, "Compare"),
        h("p", { class: "muted" }, column ? `${metric} against ${column}${sweep.repeats > 1 ? ", bars: ± one standard deviation over repeats" : ""}.`
          : `${metric} per row: ${rows.map((r, i) => `${i + 1} = ${r.name}`).join(", ")}.`));
      const chart = lineChart({ title: metric, xLabel, x, series, errors: [errors], logX: column === "lr", points: true });
      compare = { chart, xLabel };
      compareSection.append(chart.figure);
    } else {
      compare.chart.update(x, series, null, [errors]);
    }
  }

  function drawMembers() {
    const order = new Map(sweep.members.map((m, i) => [m.experiment_id, i]));
    const repeat = new Map(sweep.members.map((m) => [m.experiment_id, m.repeat]));
    const sorted = [...members.values()].sort((a, b) => (order.get(a.experiment_id) ?? 1e9) - (order.get(b.experiment_id) ?? 1e9));
    const body = sorted.map((m) => h("tr", { "data-id": m.experiment_id, "data-status": m.status },
      h("td", {}, h("input", { type: "checkbox", id: `pick-${m.experiment_id}`, checked: selected.has(m.experiment_id),
        "aria-label": `overlay ${m.name} (${m.experiment_id})`, onchange: (e) => pick(m, e.target.checked) })),
      h("td", {}, h("a", { href: `/ui/experiments/${m.experiment_id}`, "data-link": true }, m.name), h("div", { class: "muted mono" }, m.experiment_id)),
      h("td", { class: "num" }, repeat.has(m.experiment_id) ? repeat.get(m.experiment_id) + 1 : "-"),
      h("td", { class: "cell-status" }, statusBadge(m.status)),
      h("td", { class: "num" }, `${fmtInt(m.epochs_done)}/${fmtInt(m.epochs)}`)));
    membersSection.replaceChildren(h("h2", { id: "h-members" }, "Members"),
      tableFrame(h("table", { class: "data", id: "members" },
        h("thead", {}, h("tr", {}, ["overlay", "name", "repeat", "status", "epochs"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, body)), "Members"));
  }

  async function pick(member, on) {
    if (on) selected.add(member.experiment_id);
    else selected.delete(member.experiment_id);
    const metric = table && table.metric ? table.metric : "val_loss";
    const curves = [];
    for (const experimentId of selected) {
      try {
        const page = await api(`/experiments/${experimentId}/metrics`);
        curves.push({ id: experimentId, name: members.get(experimentId).name, epochs: page.epochs });
      } catch (error) {
        notice.replaceChildren(message(error.message));
      }
    }
    if (stopped) return;
    const length = Math.max(0, ...curves.map((c) => c.epochs.length));
    const x = Array.from({ length }, (_, i) => i + 1);
    const series = curves.map((c) => ({ label: `${c.name} ${c.id.slice(0, 6)}`, values: x.map((_, i) => (c.epochs[i] ? c.epochs[i][metric] ?? null : null)) }));
    if (overlay) overlay.destroy();
    overlay = null;
    overlaySection.querySelector("figure")?.remove();
    document.getElementById("overlay-empty").hidden = curves.length > 0;
    if (curves.length) {
      overlay = lineChart({ title: metric, x, series });
      overlaySection.append(overlay.figure);
    }
  }

  load();
  return () => {
    stopped = true;
    stops.forEach((stop) => stop());
    if (tableTimer) clearTimeout(tableTimer);
    if (compare) compare.chart.destroy();
    if (overlay) overlay.destroy();
  };
}
