// The "new experiment" editor: a JSON spec posted to POST /experiments (a body with `base` is a
// sweep, posted to POST /sweeps). A 422 lists every field error with its path; each one jumps
// to its field in the editor and marks it.
import { api } from "../api.js";
import { h, message } from "../util.js";

export const MODEL22 = {
  name: "model22",
  dataset: { name: "spirals", params: { n_samples: 2000, noise: 0.1 }, split: { val: 0.2, test: 0.2 }, seed: 0 },
  model: { type: "mlp", hidden_layers: 3, neurons: 8, activation: "relu" },
  loss: "bce",
  optimizer: { name: "adam", lr: 0.01 },
  batch_size: 128,
  epochs: 300,
  seed: 0,
};

/** Where the field at `loc` (["body", "model", "neurons"]) is written: [start, end] or null. */
export function locate(text, loc) {
  let from = 0;
  let found = null;
  for (const part of loc) {
    if (part === "body") continue;
    if (typeof part === "number") continue;  // a list index: the list's key was found already
    const at = text.indexOf(`"${part}"`, from);
    if (at < 0) continue;  // a tag pydantic adds (a union member's name), not a key written
    found = [at, at + part.length + 2];
    from = found[1];
  }
  if (!found) return null;
  // Select the key and its value up to the end of its line.
  const lineEnd = text.indexOf("\n", found[1]);
  return [found[0], lineEnd < 0 ? text.length : lineEnd];
}

export function render(ctx) {
  const { main, query, navigate } = ctx;
  const editor = h("textarea", { id: "spec-editor", rows: 24, spellcheck: false, "aria-describedby": "editor-help field-errors", autocomplete: "off", wrap: "off" });
  // Line numbers beside the editor; a field error marks its line there (✗), at the field.
  const gutter = h("pre", { class: "gutter", "aria-hidden": "true" });
  let marked = new Map();  // line → messages
  const drawGutter = () => {
    const count = editor.value.split("\n").length;
    gutter.replaceChildren(...Array.from({ length: count }, (_, i) => {
      const messages = marked.get(i + 1);
      return h("span", { class: messages ? "bad" : null, title: messages ? messages.join("; ") : null }, `${messages ? "✗ " : ""}${i + 1}`);
    }));
    gutter.scrollTop = editor.scrollTop;
  };
  editor.addEventListener("input", drawGutter);
  editor.addEventListener("scroll", () => { gutter.scrollTop = editor.scrollTop; });
  const errors = h("div", { id: "field-errors", "aria-live": "assertive" });
  const submit = h("button", { type: "submit", class: "primary", id: "submit-spec" }, "Submit");
  const form = h("form", { class: "editor", onsubmit: send },
    h("label", { for: "spec-editor" }, "Spec (JSON)"),
    h("p", { class: "muted", id: "editor-help" }, "An experiment spec (see the README's spec table), or a sweep: a body with ",
      h("code", {}, "base"), " goes to POST /sweeps. Unknown fields are refused."),
    h("div", { class: "editor-grid" }, h("div", { class: "editor-frame" }, gutter, editor), errors),
    h("div", { class: "actions" }, submit,
      h("button", { type: "button", onclick: () => { editor.value = JSON.stringify(MODEL22, null, 2); clear(); } }, "Reset to model22")));
  main.append(h("h1", {}, "New experiment"), form);
  editor.value = JSON.stringify(MODEL22, null, 2);
  drawGutter();
  editor.addEventListener("keydown", (event) => {  // Tab indents; Escape then Tab leaves the editor
    if (event.key === "Tab" && !event.shiftKey && !editor.dataset.escaped) {
      event.preventDefault();
      editor.setRangeText("  ", editor.selectionStart, editor.selectionEnd, "end");
    }
    if (event.key === "Escape") editor.dataset.escaped = "1";
  });
  editor.addEventListener("blur", () => delete editor.dataset.escaped);
  prefill();

  async function prefill() {
    try {
      if (query.get("from")) {
        const exp = await api(`/experiments/${encodeURIComponent(query.get("from"))}`);
        editor.value = JSON.stringify({ ...exp.spec, name: `${exp.spec.name}-copy` }, null, 2);
        drawGutter();
      } else if (query.get("dataset") || query.get("dataset_id")) {
        // A built-in by name, an upload by id; the loss then follows from the dataset's task.
        const dataset = query.get("dataset_id") ? { id: query.get("dataset_id") } : { name: query.get("dataset") };
        const spec = { ...MODEL22, name: "experiment", dataset };
        delete spec.loss;
        editor.value = JSON.stringify(spec, null, 2);
        drawGutter();
      }
    } catch (error) {
      errors.replaceChildren(message(error.message));
    }
  }

  function clear() {
    errors.replaceChildren();
    editor.removeAttribute("aria-invalid");
    marked = new Map();
    drawGutter();
  }

  async function send(event) {
    event.preventDefault();
    clear();
    let body;
    try {
      body = JSON.parse(editor.value);
    } catch (error) {
      editor.setAttribute("aria-invalid", "true");
      errors.replaceChildren(message(`Not JSON: ${error.message}`));
      return;
    }
    const sweep = body && typeof body === "object" && "base" in body;
    submit.disabled = true;
    try {
      const created = await api(sweep ? "/sweeps" : "/experiments", { method: "POST", json: body });
      navigate(sweep ? `/ui/sweeps/${created.id}` : `/ui/experiments/${created.id}`);
    } catch (error) {
      editor.setAttribute("aria-invalid", "true");
      const list = (error.body && error.body.errors) || [];
      if (!list.length) {
        errors.replaceChildren(message(error.message));
        return;
      }
      errors.replaceChildren(
        h("p", { class: "message message-error", role: "alert" }, `${error.body.error}: ${list.length} field error${list.length > 1 ? "s" : ""}`),
        h("ul", { class: "field-errors" }, list.map((e) => {
          const path = e.loc.filter((p) => p !== "body").join(".");
          const span = locate(editor.value, e.loc);
          const line = span ? editor.value.slice(0, span[0]).split("\n").length : null;
          return h("li", { "data-loc": path },
            h("button", { type: "button", class: "link", onclick: () => jump(e.loc) }, h("code", {}, path || "(the body)")),
            line ? ` (line ${line})` : "", `: ${e.msg}`);
        })));
      for (const e of list) {
        const span = locate(editor.value, e.loc);
        if (!span) continue;
        const line = editor.value.slice(0, span[0]).split("\n").length;
        marked.set(line, [...(marked.get(line) || []), e.msg]);
      }
      drawGutter();
      const first = list.find((e) => locate(editor.value, e.loc));
      if (first) jump(first.loc, false);
    } finally {
      submit.disabled = false;
    }
  }

  function jump(loc, focus = true) {
    const span = locate(editor.value, loc);
    if (!span) return;
    if (focus) editor.focus();
    editor.setSelectionRange(span[0], span[1]);
    // Scroll the field into view: its line's offset in the editor.
    const line = editor.value.slice(0, span[0]).split("\n").length - 1;
    editor.scrollTop = Math.max(0, line * 18 - editor.clientHeight / 3);
    gutter.scrollTop = editor.scrollTop;
  }
}
