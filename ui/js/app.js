// The single page: a router over /ui/... paths (deep links answer this same index.html), the
// key prompt on a 401, and sign-out. Each page module draws into <main> and returns a cleanup.
import { clearKey, getKey, onUnauthorized, setKey } from "./api.js";
import * as datasets from "./pages/datasets.js";
import * as experiment from "./pages/experiment.js";
import * as experiments from "./pages/experiments.js";
import * as editor from "./pages/new.js";
import * as sweep from "./pages/sweep.js";
import { h } from "./util.js";

const ROUTES = [
  [/^\/ui\/?$/, experiments.render, "experiments"],
  [/^\/ui\/experiments\/?$/, experiments.render, "experiments"],
  [/^\/ui\/new\/?$/, editor.render, "new"],
  [/^\/ui\/experiments\/([^/]+)\/?$/, experiment.render, "experiments"],
  [/^\/ui\/sweeps\/?$/, sweep.renderList, "sweeps"],
  [/^\/ui\/sweeps\/([^/]+)\/?$/, sweep.render, "sweeps"],
  [/^\/ui\/datasets\/?$/, datasets.render, "datasets"],
  [/^\/ui\/datasets\/([^/]+)\/?$/, datasets.renderOne, "datasets"],
];

const main = document.getElementById("main");
const dialog = document.getElementById("key-dialog");
const signOut = document.getElementById("sign-out");
let cleanup = null;

export function navigate(path) {
  history.pushState(null, "", path);
  route();
  main.focus({ preventScroll: true });
}

function route() {
  if (cleanup) cleanup();
  cleanup = null;
  signOut.hidden = !getKey();
  const url = new URL(location.href);
  for (const [pattern, render, section] of ROUTES) {
    const match = url.pathname.match(pattern);
    if (!match) continue;
    for (const link of document.querySelectorAll("nav a")) {
      if (link.dataset.section === section) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    main.replaceChildren();
    const params = match.slice(1).map(decodeURIComponent);
    const ctx = { main, navigate, query: url.searchParams };
    cleanup = render(ctx, ...params) || null;
    return;
  }
  main.replaceChildren(h("h1", {}, "Not found"), h("p", {}, "No such page. ", h("a", { href: "/ui/", "data-link": true }, "Experiments")));
}

// Links inside the page change the view without reloading it.
document.addEventListener("click", (event) => {
  const a = event.target.closest("a[data-link]");
  if (!a || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", route);

let prompting = false;
onUnauthorized(() => {
  if (prompting) return;
  prompting = true;
  const error = document.getElementById("key-error");
  error.hidden = !getKey();
  error.textContent = getKey() ? "That key was refused: try another." : "";
  clearKey();
  signOut.hidden = true;
  document.getElementById("key-input").value = "";
  dialog.showModal();
});
document.getElementById("key-form").addEventListener("submit", () => {
  setKey(document.getElementById("key-input").value.trim());
  prompting = false;
  route();
});
dialog.addEventListener("cancel", (event) => event.preventDefault());  // no data without a key
signOut.addEventListener("click", () => {
  clearKey();
  main.replaceChildren(h("h1", {}, "Signed out"), h("p", {}, "The key is gone from this tab. ",
    h("a", { href: "/ui/", "data-link": true }, "Sign in again")));
  signOut.hidden = true;
  if (cleanup) cleanup();
  cleanup = null;
});

route();
