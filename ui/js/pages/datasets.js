// Datasets: the built-ins and this owner's uploads with their schema; an upload form that shows
// the API's refusals as it words them; delete (refused while in use, as the API says).
import { api } from "../api.js";
import { fmtDate, fmtInt, h, message, tableFrame } from "../util.js";

const ref = (d) => d.id || d.name;
const shape = (d) => d.input_shape.join("×");
const targets = (d) => Object.entries(d.targets).map(([t, classes]) => (classes ? `${t}: ${classes.length} classes` : `${t}: a number`)).join(", ");
const sizes = (d) => `${fmtInt(d.sizes.train)} / ${fmtInt(d.sizes.val)} / ${fmtInt(d.sizes.test)}`;

function features(d) {
  const shown = d.features.slice(0, 6).join(", ");
  return d.features.length > 6 ? `${shown}, … (${d.features.length})` : shown;
}

/** The refusal as the API words it: its detail, then each field error. */
function refusal(error) {
  const list = (error.body && error.body.errors) || [];
  return h("div", { class: "refusal", role: "alert" },
    h("p", { class: "message message-error" }, error.message),
    list.length > 1 ? h("ul", {}, list.map((e) => h("li", {}, h("code", {}, e.loc.join(".")), `: ${e.msg}`))) : null);
}

export function render(ctx) {
  const { main } = ctx;
  const body = h("tbody");
  const notice = h("div", { id: "datasets-notice", "aria-live": "polite" });
  const file = h("input", { type: "file", id: "upload-file", name: "file", accept: ".csv,.npz", required: true });
  const target = h("input", { id: "upload-target", name: "target", placeholder: "CSV: the column to predict" });
  const name = h("input", { id: "upload-name", name: "name", placeholder: "name (default: the file's)" });
  const result = h("div", { id: "upload-result", "aria-live": "assertive" });
  const form = h("form", { class: "upload", id: "upload-form", onsubmit: upload },
    h("div", { class: "field" }, h("label", { for: "upload-file" }, "File (CSV or NPZ)"), file),
    h("div", { class: "field" }, h("label", { for: "upload-target" }, "Target column"), target),
    h("div", { class: "field" }, h("label", { for: "upload-name" }, "Name"), name),
    h("button", { type: "submit", class: "primary" }, "Upload"), result);
  main.append(h("h1", {}, "Datasets"), notice,
    tableFrame(h("table", { class: "data", id: "datasets" },
      h("thead", {}, h("tr", {}, ["name", "kind", "task", "inputs", "features", "targets", "samples", "train / val / test", ""]
        .map((c) => h("th", { scope: "col" }, c)))), body), "Datasets table"),
    h("section", { "aria-labelledby": "h-upload" }, h("h2", { id: "h-upload" }, "Upload"),
      h("p", { class: "muted" }, "A CSV with a header line, numeric features and the target column, or an NPZ with arrays x and y. The file is validated completely before it is stored."),
      form));

  async function list() {
    try {
      const page = await api("/datasets");
      body.replaceChildren(...page.items.map(row));
    } catch (error) {
      notice.replaceChildren(message(error.message));
    }
  }

  function row(d) {
    return h("tr", { "data-name": d.name, "data-kind": d.kind },
      h("td", {}, h("a", { href: `/ui/datasets/${encodeURIComponent(ref(d))}`, "data-link": true }, d.name),
        d.id ? h("div", { class: "muted mono" }, d.id) : null),
      h("td", {}, d.kind === "builtin" ? "built-in" : [`${d.format.toUpperCase()} upload`,
        h("div", { class: "muted nowrap" }, `${fmtInt(d.size_bytes)} B`), h("div", { class: "muted nowrap" }, fmtDate(d.created_at))]),
      h("td", {}, d.task), h("td", { class: "nowrap" }, shape(d)), h("td", { class: "wrap-list" }, features(d)),
      h("td", { class: "wrap-list" }, targets(d)),
      h("td", { class: "num" }, fmtInt(d.n_samples)), h("td", { class: "num nowrap" }, sizes(d)),
      h("td", {}, d.kind === "upload" ? h("button", { type: "button", class: "danger", "aria-label": `delete ${d.name}`, onclick: () => remove(d) }, "Delete") : null));
  }

  async function remove(d) {
    if (!confirm(`Delete the upload ${d.name} (${d.id})? Finished experiments trained on it keep serving predictions.`)) return;
    try {
      await api(`/datasets/${d.id}`, { method: "DELETE" });
      notice.replaceChildren(message(`Deleted ${d.name}.`, "info"));
      list();
    } catch (error) {
      notice.replaceChildren(refusal(error));
    }
  }

  async function upload(event) {
    event.preventDefault();
    const data = new FormData();
    data.append("file", file.files[0]);
    if (target.value.trim()) data.append("target", target.value.trim());
    if (name.value.trim()) data.append("name", name.value.trim());
    result.replaceChildren(h("p", { class: "muted" }, "Uploading…"));
    try {
      const d = await api("/datasets", { method: "POST", body: data });
      result.replaceChildren(h("p", { class: "message message-info", role: "status" }, `Stored ${d.name} (${d.id}): ${d.task}, ${fmtInt(d.n_samples)} rows, features ${d.features.join(", ")}. `,
        h("a", { href: `/ui/new?dataset_id=${d.id}`, "data-link": true }, "Train on it")));
      form.reset();
      list();
    } catch (error) {
      result.replaceChildren(refusal(error));
    }
  }

  list();
}

export function renderOne(ctx, name) {
  const { main } = ctx;
  const holder = h("div");
  main.append(holder);
  api(`/datasets/${encodeURIComponent(name)}`).then((d) => {
    const facts = [
      ["kind", d.kind === "builtin" ? "built-in" : `upload (${d.format})`], ["id", d.id || "-"], ["task", d.task],
      ["input shape", shape(d)], ["samples", fmtInt(d.n_samples)], ["train / val / test (default split)", sizes(d)],
      ["file size", d.size_bytes ? `${fmtInt(d.size_bytes)} bytes` : "-"], ["uploaded", d.created_at ? fmtDate(d.created_at) : "-"],
      ["parameters", d.params ? JSON.stringify(d.params) : "-"],
    ];
    holder.replaceChildren(
      h("p", {}, h("a", { href: "/ui/datasets", "data-link": true }, "← Datasets")),
      h("h1", {}, d.name), h("p", {}, d.description),
      h("dl", { class: "facts" }, facts.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v)))),
      h("h2", {}, `Features (${d.features.length})`), h("p", { class: "features" }, d.features.join(", ")),
      h("h2", {}, "Targets"),
      h("ul", {}, Object.entries(d.targets).map(([t, classes]) => h("li", {}, h("strong", {}, t), ": ", classes ? classes.join(", ") : "a number (regression)"))),
      h("p", {}, h("a", { class: "button primary", href: d.id ? `/ui/new?dataset_id=${d.id}` : `/ui/new?dataset=${encodeURIComponent(d.name)}`, "data-link": true }, "Train on it")));
  }).catch((error) => holder.replaceChildren(h("h1", {}, "Dataset"), message(error.status === 404 ? `No dataset ${name} (for this key).` : error.message)));
}
