// The experiments table: the owner's runs, newest first, filtered by status and sweep (by the
// API) and by name (over the rows loaded), one page of 50 at a time (the API's cursor), and
// statuses kept live by polling while anything shown is not finished.
import { api } from "../api.js";
import { fmtDate, fmtInt, h, message, metricText, servedMetrics, STATUSES, statusBadge, tableFrame, TERMINAL } from "../util.js";

const PAGE = 50;
const POLL_MS = 2000;

export function render(ctx) {
  const { main, query } = ctx;
  const filters = { status: query.get("status") || "", sweep: query.get("sweep") || "", name: query.get("name") || "" };
  let rows = [];  // experiments in the order shown
  let cursor = null;
  let timer = null;
  let stopped = false;

  const status = h("select", { id: "f-status", name: "status" }, h("option", { value: "" }, "any"),
    STATUSES.map((s) => h("option", { value: s, selected: s === filters.status }, s)));
  const sweep = h("input", { id: "f-sweep", name: "sweep", value: filters.sweep, placeholder: "sweep id", size: 18 });
  const name = h("input", { id: "f-name", name: "name", value: filters.name, placeholder: "part of a name", size: 18 });
  const form = h("form", { class: "filters", role: "search", onsubmit: (e) => { e.preventDefault(); apply(); } },
    h("label", { for: "f-status" }, "Status"), status,
    h("label", { for: "f-sweep" }, "Sweep"), sweep,
    h("label", { for: "f-name" }, "Name"), name,
    h("button", { type: "submit" }, "Filter"));
  status.addEventListener("change", apply);
  const body = h("tbody");
  // Sorting orders the rows loaded (the API pages newest first); "created" descending is its order.
  let sort = { column: "created", dir: -1 };
  const servedValue = (e) => {
    const m = servedMetrics(e) || {};
    const key = Object.keys(m).find((k) => k.startsWith("val_") && k !== "val_loss");
    return key ? m[key] : null;
  };
  const KEYS = {
    name: (e) => e.name.toLowerCase(), status: (e) => e.status, task: (e) => e.task, params: (e) => e.param_count,
    epochs: (e) => e.epochs_done, validation: servedValue, device: (e) => e.device || "", created: (e) => e.created_at,
  };
  const head = h("tr");
  const table = h("table", { class: "data", id: "experiments" },
    h("caption", { class: "visually-hidden" }, "Experiments; the column buttons sort the rows loaded"),
    h("thead", {}, head), body);
  function drawHead() {
    head.replaceChildren(...["name", "status", "task", "params", "epochs", "validation", "device", "tags", "created"].map((c) => {
      const label = c === "validation" ? "validation (served model)" : c;
      if (!KEYS[c]) return h("th", { scope: "col" }, label);
      const current = sort.column === c;
      return h("th", { scope: "col", "aria-sort": current ? (sort.dir > 0 ? "ascending" : "descending") : null },
        h("button", { type: "button", class: "sort", "data-sort": c, onclick: () => {
          sort = { column: c, dir: current ? -sort.dir : (c === "name" || c === "status" || c === "task" || c === "device" ? 1 : -1) };
          drawHead();
          draw();
        } }, label, current ? (sort.dir > 0 ? " ▲" : " ▼") : ""));
    }));
  }
  drawHead();
  const more = h("button", { type: "button", id: "load-more", hidden: true, onclick: () => load(false) }, "Load more");
  const notice = h("div", { "aria-live": "polite" });
  const count = h("p", { class: "muted", id: "count" });
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Experiments"), h("a", { class: "button primary", href: "/ui/new", "data-link": true }, "New experiment")),
    form, notice, tableFrame(table, "Experiments table"), count, more);

  function apply() {
    filters.status = status.value;
    filters.sweep = sweep.value.trim();
    filters.name = name.value.trim();
    const params = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
    history.replaceState(null, "", `/ui/${params.toString() ? `?${params}` : ""}`);
    rows = [];
    cursor = null;
    load(true);
  }

  function url(after) {
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (filters.status) params.set("status", filters.status);
    if (filters.sweep) params.set("sweep_id", filters.sweep);
    if (after) params.set("cursor", after);
    return `/experiments?${params}`;
  }

  async function load(first) {
    try {
      const page = await api(url(first ? null : cursor));
      if (stopped) return;
      rows = first ? page.items : rows.concat(page.items);
      cursor = page.next_cursor;
      notice.replaceChildren();
      draw();
      schedule();
    } catch (error) {
      if (!stopped) notice.replaceChildren(message(error.message));
    }
  }

  // Live statuses: the first page again (new runs, changes there), and each unfinished row
  // further down on its own.
  async function poll() {
    timer = null;
    if (stopped) return;
    try {
      const fresh = await api(url(null));
      const byId = new Map(fresh.items.map((e) => [e.id, e]));
      const known = new Set(rows.map((e) => e.id));
      const added = fresh.items.filter((e) => !known.has(e.id));
      rows = added.concat(rows.map((e) => byId.get(e.id) || e));
      const stale = rows.filter((e) => !byId.has(e.id) && !TERMINAL.has(e.status)).slice(0, 10);
      for (const e of stale) {
        const now = await api(`/experiments/${e.id}`);
        rows = rows.map((r) => (r.id === now.id ? now : r));
      }
      if (!stopped) draw();
    } catch {
      // A failed poll is tried again at the next tick; a 401 has already asked for a key.
    }
    schedule();
  }

  function schedule() {
    if (!stopped && !timer && rows.some((e) => !TERMINAL.has(e.status))) timer = setTimeout(poll, POLL_MS);
  }

  function draw() {
    const needle = filters.name.toLowerCase();
    const key = KEYS[sort.column];
    const order = (a, b) => {
      const x = key(a);
      const y = key(b);
      if (x === y) return 0;
      if (x === null) return 1;  // rows without a value last, either way
      if (y === null) return -1;
      return (x < y ? -1 : 1) * sort.dir;
    };
    const shown = (needle ? rows.filter((e) => e.name.toLowerCase().includes(needle)) : rows).slice().sort(order);
    body.replaceChildren(...shown.map(row));
    if (!shown.length) body.append(h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No experiments here yet.")));
    count.textContent = `${shown.length} shown${needle ? ` (name filter over the ${rows.length} loaded)` : ""}${cursor ? "; more below" : ""}`;
    more.hidden = !cursor;
  }

  function row(e) {
    const epochs = e.spec && e.spec.epochs;
    return h("tr", { "data-id": e.id, "data-status": e.status },
      h("td", {}, h("a", { href: `/ui/experiments/${e.id}`, "data-link": true }, e.name), h("div", { class: "muted mono" }, e.id)),
      h("td", { class: "cell-status" }, statusBadge(e.status)),
      h("td", {}, e.task),
      h("td", { class: "num" }, fmtInt(e.param_count)),
      h("td", { class: "num" }, `${e.epochs_done}/${epochs ?? "?"}`),
      h("td", {}, metricText(servedMetrics(e))),
      h("td", {}, e.device || "-"),
      h("td", {}, (e.tags || []).map((t) => h("span", { class: "tag" }, t))),
      h("td", { class: "nowrap" }, fmtDate(e.created_at)));
  }

  load(true);
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
  };
}
