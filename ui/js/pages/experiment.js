// One experiment: its status and progress live over the SSE stream, learning curves that grow
// while it trains (one chart per quantity), the API's plots, predictions by feature name, test
// evaluations behind a confirmation, the model download, cancel, and the spec.
import { api, blobUrl, download, streamEvents } from "../api.js";
import { lineChart } from "../chart.js";
import { fmtDate, fmtInt, fmtMetric, h, message, metricText, servedMetrics, statusBadge, tableFrame, TERMINAL } from "../util.js";

const PLOTS = {
  "learning-curves": "Learning curves",
  "decision-boundary": "Decision boundary",
  confusion: "Confusion matrix (validation)",
  sigma: "σ and μ ± 2σ",
};

/** Quantities of the epoch rows: train_loss and val_loss share "loss"; each other metric its own. */
function quantities(keys) {
  const groups = new Map();
  for (const key of keys) {
    if (key === "epoch" || key === "seconds") continue;
    const quantity = key.replace(/^(train|val)_/, "");
    if (!groups.has(quantity)) groups.set(quantity, []);
    groups.get(quantity).push(key);
  }
  return groups;
}

export function render(ctx, id) {
  const { main } = ctx;
  const urls = [];
  const stops = [];
  let exp = null;
  let dataset = null;
  const epochs = [];  // rows of the events stream, in order
  const charts = new Map();  // quantity → chart
  let pending = false;

  const head = h("div", { class: "page-head" });
  const progress = h("div", { class: "progress-line", "aria-live": "polite" });
  const notice = h("div");
  const summary = h("section", { "aria-labelledby": "h-summary" });
  const curves = h("section", { "aria-labelledby": "h-curves" }, h("h2", { id: "h-curves" }, "Learning curves"),
    h("p", { class: "muted", id: "curves-empty" }, "No epoch finished yet."), h("div", { class: "charts", id: "charts" }));
  const plots = h("section", { "aria-labelledby": "h-plots", id: "plots" });
  const predict = h("section", { "aria-labelledby": "h-predict", id: "predict" });
  const evaluate = h("section", { "aria-labelledby": "h-eval", id: "evaluate" });
  const spec = h("section", { "aria-labelledby": "h-spec" });
  main.append(head, progress, notice, summary, curves, plots, predict, evaluate, spec);

  async function load() {
    try {
      exp = await api(`/experiments/${id}`);
    } catch (error) {
      notice.replaceChildren(message(error.status === 404 ? `No experiment ${id} (for this key).` : error.message));
      return;
    }
    try {
      dataset = await api(`/datasets/${encodeURIComponent(exp.spec.dataset.id || exp.spec.dataset.name)}`);
    } catch {
      dataset = null;  // a deleted upload: the experiment still shows, without the feature form
    }
    drawAll();
    follow();
  }

  function follow() {
    stops.push(streamEvents(`/experiments/${id}/events`, {
      onEvent(ev) {
        if (ev.event === "epoch") {
          epochs.push(ev.data);
          if (!pending) {
            pending = true;
            requestAnimationFrame(() => { pending = false; drawCurves(); });
          }
        } else if (ev.event === "status") {
          const was = exp.status;
          Object.assign(exp, { status: ev.data.status, epochs_done: ev.data.epochs_done, error: ev.data.error });
          drawProgress(ev.data.epochs);
          if (TERMINAL.has(ev.data.status) && !TERMINAL.has(was)) refresh();
          else if (ev.data.status !== was) drawHead();
        }
      },
      onError: (error) => notice.replaceChildren(message(`Live progress stopped: ${error.message}`)),
      again: () => !TERMINAL.has(exp.status),
    }));
  }

  async function refresh() {  // once it ended: served metrics, plots, predictions
    try {
      exp = await api(`/experiments/${id}`);
      drawAll();
    } catch (error) {
      notice.replaceChildren(message(error.message));
    }
  }

  function drawAll() {
    drawHead();
    drawProgress(exp.spec.epochs);
    drawSummary();
    drawCurves();
    drawPlots();
    drawPredict();
    drawEvaluate();
    spec.replaceChildren(h("h2", { id: "h-spec" }, "Spec"),
      h("p", {}, h("a", { href: `/ui/new?from=${exp.id}`, "data-link": true }, "Edit a copy in the editor")),
      h("details", {}, h("summary", {}, "The spec, every default filled"),
        h("pre", { class: "spec", tabindex: "0", "aria-label": "the spec" }, JSON.stringify(exp.spec, null, 2))));
  }

  function drawHead() {
    const actions = h("div", { class: "actions" });
    if (!TERMINAL.has(exp.status)) {
      actions.append(exp.cancel_requested
        ? h("button", { type: "button", id: "cancel", disabled: true }, "Cancel requested")
        : h("button", { type: "button", id: "cancel", onclick: cancel }, "Cancel"));
    }
    if (exp.status === "succeeded" || exp.status === "pruned") {
      actions.append(h("button", { type: "button", id: "download", onclick: () => download(`/experiments/${id}/model`, `${exp.name}-${id}.safetensors`).catch((e) => notice.replaceChildren(message(e.message))) }, "Download model"));
    }
    head.replaceChildren(
      h("div", {}, h("h1", {}, exp.name), h("p", { class: "muted mono" }, exp.id,
        exp.sweep_id ? [" · sweep ", h("a", { href: `/ui/sweeps/${exp.sweep_id}`, "data-link": true }, exp.sweep_id)] : null)),
      actions);
  }

  function drawProgress(total) {
    const of = total || exp.spec.epochs;
    progress.replaceChildren(
      h("span", { id: "status" }, statusBadge(exp.status)), " ",
      h("progress", { max: of, value: exp.epochs_done, "aria-label": "epochs done" }), " ",
      h("span", { id: "epochs" }, `epoch ${exp.epochs_done}/${of}`),
      ...(exp.error ? [h("span", { class: "error-text", id: "run-error" }, ` · ${exp.error}`)] : []));
  }

  async function cancel() {
    try {
      exp = await api(`/experiments/${id}/cancel`, { method: "POST" });
      notice.replaceChildren(message("Cancel requested: a running experiment stops at its next epoch.", "info"));
      drawHead();
    } catch (error) {
      notice.replaceChildren(message(error.message));
    }
  }

  function drawSummary() {
    const m = exp.metrics || {};
    const items = [
      ["task", exp.task], ["parameters", fmtInt(exp.param_count)], ["device", exp.device || "-"],
      ["worker", exp.worker || "-"], ["attempts", exp.attempt],
      ["served model", metricText(servedMetrics(exp), true)], ["latest epoch", metricText(m.latest, true)],
      ["test evaluations", exp.test_evaluations], ["training time", exp.train_seconds ? `${exp.train_seconds.toFixed(1)} s` : "-"],
      ["created", fmtDate(exp.created_at)], ["started", fmtDate(exp.started_at)], ["finished", fmtDate(exp.finished_at)],
    ];
    if (exp.queue_position) items.push(["queue position", exp.queue_position]);
    if (exp.tags && exp.tags.length) items.push(["tags", exp.tags.join(", ")]);
    if (exp.notes) items.push(["notes", exp.notes]);
    summary.replaceChildren(h("h2", { id: "h-summary" }, "Summary"),
      h("dl", { class: "facts" }, items.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, String(v))))));
  }

  function keptEpoch() {
    const served = servedMetrics(exp);
    if (!served || !served.epoch) return null;
    const which = exp.metrics && exp.metrics.served ? "kept" : "best";
    return { x: served.epoch, label: `dashed line: the ${which} epoch, ${served.epoch}` };
  }

  function drawCurves() {
    if (!epochs.length) return;
    document.getElementById("curves-empty")?.remove();
    const keys = [...new Set(epochs.flatMap((e) => Object.keys(e)))];
    const x = epochs.map((e) => e.epoch);
    const marker = TERMINAL.has(exp.status) ? keptEpoch() : null;
    const holder = curves.querySelector(".charts");
    for (const [quantity, members] of quantities(keys)) {
      const series = members.map((k) => ({ label: k, values: epochs.map((e) => (e[k] ?? null)) }));
      if (charts.has(quantity)) charts.get(quantity).update(x, series, marker);
      else {
        const chart = lineChart({ title: quantity, x, series, marker });
        charts.set(quantity, chart);
        holder.append(chart.figure);
      }
    }
  }

  async function drawPlots() {
    plots.replaceChildren(h("h2", { id: "h-plots" }, "Plots"));
    const kinds = [];
    if (exp.epochs_done > 0) kinds.push("learning-curves");
    if (exp.status === "succeeded" && dataset) {
      const classifier = exp.task !== "regression";
      if (classifier && dataset.input_shape.length === 1 && dataset.input_shape[0] === 2) kinds.push("decision-boundary");
      if (classifier) kinds.push("confusion");
      if (exp.spec.loss === "gaussian_nll") kinds.push("sigma");
    }
    if (!kinds.length) {
      plots.append(h("p", { class: "muted" }, "The API draws plots once an epoch finished (the model's plots once it succeeded)."));
      return;
    }
    const grid = h("div", { class: "plots" });
    plots.append(grid);
    for (const kind of kinds) {
      const figure = h("figure", { class: "plot", "data-kind": kind }, h("figcaption", {}, PLOTS[kind]));
      grid.append(figure);
      let query = "";
      if (kind === "sigma") {
        const select = h("select", { id: "sigma-feature", "aria-label": "σ against feature" },
          dataset.features.map((f) => h("option", { value: f }, f)));
        figure.querySelector("figcaption").append(" against ", select);
        select.addEventListener("change", () => show(figure, kind, `?feature=${encodeURIComponent(select.value)}`));
        query = `?feature=${encodeURIComponent(dataset.features.includes("Gr_Liv_Area") ? "Gr_Liv_Area" : dataset.features[0])}`;
        select.value = decodeURIComponent(query.slice(9));
      }
      show(figure, kind, query);
    }
  }

  async function show(figure, kind, query) {
    figure.querySelector("img, .message")?.remove();
    try {
      const url = await blobUrl(`/experiments/${id}/plots/${kind}.png${query}`);
      urls.push(url);
      figure.append(h("img", { src: url, alt: `${PLOTS[kind]} of ${exp.name}` }));
    } catch (error) {
      figure.append(message(error.message));
    }
  }

  function drawPredict() {
    predict.replaceChildren(h("h2", { id: "h-predict" }, "Predict"));
    if (exp.status !== "succeeded") {
      predict.append(h("p", { class: "muted" }, "Predictions open once the experiment has succeeded."));
      return;
    }
    if (!dataset || dataset.input_shape.length !== 1) {
      predict.append(h("p", { class: "muted" }, dataset ? "An image model: send [C][H][W] arrays to POST /experiments/{id}/predictions." : "The dataset is gone: send rows in feature order to the API."));
      return;
    }
    const inputs = dataset.features.map((f, i) => h("div", { class: "field" },
      h("label", { for: `feature-${i}` }, f),
      h("input", { id: `feature-${i}`, name: f, type: "number", step: "any", required: true, inputmode: "decimal" })));
    const out = h("div", { id: "prediction", "aria-live": "polite" });
    const form = h("form", { class: "predict-form", onsubmit: async (event) => {
      event.preventDefault();
      const row = Object.fromEntries(dataset.features.map((f, i) => [f, Number(document.getElementById(`feature-${i}`).value)]));
      try {
        const answer = await api(`/experiments/${id}/predictions`, { method: "POST", json: { inputs: [row] } });
        out.replaceChildren(predictionView(answer.predictions[0]));
      } catch (error) {
        out.replaceChildren(message(error.message));
      }
    } }, h("div", { class: "fields" }, inputs), h("button", { type: "submit", class: "primary" }, "Predict"));
    predict.append(form, out);
  }

  function drawEvaluate() {
    evaluate.replaceChildren(h("h2", { id: "h-eval" }, "Evaluations"));
    if (exp.status !== "succeeded") {
      evaluate.append(h("p", { class: "muted" }, "Evaluations open once the experiment has succeeded."));
      return;
    }
    const list = h("div", { id: "evaluations" });
    const confirmBox = h("dialog", { id: "test-confirm", "aria-labelledby": "test-confirm-title" },
      h("form", { method: "dialog" },
        h("h2", { id: "test-confirm-title" }, "Evaluate on the test split?"),
        h("p", {}, `Each test look is recorded and counted on this experiment (${exp.test_evaluations} so far). `,
          "Choose models on validation metrics; look at the test split once you have chosen."),
        h("div", { class: "actions" },
          h("button", { type: "submit", value: "cancel" }, "Not now"),
          h("button", { type: "submit", value: "test", class: "primary", id: "test-confirm-yes" }, "Evaluate on test (counted)"))));
    confirmBox.addEventListener("close", () => {
      if (confirmBox.returnValue === "test") run("test");
    });
    evaluate.append(
      h("div", { class: "actions" },
        h("button", { type: "button", onclick: () => run("val") }, "Evaluate on validation"),
        h("button", { type: "button", id: "evaluate-test", onclick: () => { confirmBox.returnValue = ""; confirmBox.showModal(); } }, "Evaluate on test…")),
      h("p", { class: "muted", id: "test-count" }, `Test evaluations so far: ${exp.test_evaluations}`),
      list, confirmBox);
    listEvaluations(list);

    async function run(split) {
      try {
        const result = await api(`/experiments/${id}/evaluations`, { method: "POST", json: { split } });
        exp.test_evaluations = result.test_evaluations;
        document.getElementById("test-count").textContent = `Test evaluations so far: ${exp.test_evaluations}`;
        listEvaluations(list);
      } catch (error) {
        list.prepend(message(error.message));
      }
    }
  }

  async function listEvaluations(list) {
    try {
      const page = await api(`/experiments/${id}/evaluations`);
      if (!page.items.length) {
        list.replaceChildren(h("p", { class: "muted" }, "No evaluation yet."));
        return;
      }
      const keys = [...new Set(page.items.flatMap((e) => Object.keys(e.metrics)))];
      list.replaceChildren(tableFrame(h("table", { class: "data" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "split"), h("th", { scope: "col" }, "when"), keys.map((k) => h("th", { scope: "col" }, k)))),
        h("tbody", {}, page.items.map((e) => h("tr", {}, h("td", {}, e.split), h("td", { class: "nowrap" }, fmtDate(e.created_at)),
          keys.map((k) => h("td", { class: "num" }, fmtMetric(k, e.metrics[k]))))))), "Evaluations"));
    } catch (error) {
      list.replaceChildren(message(error.message));
    }
  }

  load();
  return () => {
    stops.forEach((stop) => stop());
    charts.forEach((chart) => chart.destroy());
    urls.forEach((url) => URL.revokeObjectURL(url));
  };
}

/** One prediction as text: label and probabilities, μ and σ, a value, or one per target. */
export function predictionView(p) {
  if ("mu" in p) {
    return h("p", { class: "result" }, `μ = ${fmtMetric("mu", p.mu)}, σ = ${fmtMetric("sigma", p.sigma)}`);
  }
  if ("value" in p) return h("p", { class: "result" }, `value = ${fmtMetric("value", p.value)}`);
  if ("label" in p) {
    const probs = (p.probabilities || []).map((q, i) => `${i}: ${(100 * q).toFixed(1)}%`).join(", ");
    return h("p", { class: "result" }, `label ${p.label}`, probs ? ` (probabilities ${probs})` : "");
  }
  return h("div", {}, Object.entries(p).map(([target, q]) => h("div", {}, `${target}: `, predictionView(q))));
}

