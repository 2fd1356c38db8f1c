// The JSON API as the pages use it: the key from this tab's sessionStorage in the X-API-Key
// header (never in a URL), the error envelope as an ApiError, and Server-Sent Events read with
// fetch() because EventSource cannot send a header.

const KEY = "labtrain.apiKey";

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.detail ? `${body.error || "Error"}: ${body.detail}` : `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

export const getKey = () => sessionStorage.getItem(KEY);
export const setKey = (key) => sessionStorage.setItem(KEY, key);
export const clearKey = () => sessionStorage.removeItem(KEY);

let unauthorized = () => {};
/** Called on every 401, so the app can ask for a key. */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

/** fetch() with the key; JSON in and out. `raw: true` returns the Response (for blobs, streams). */
export async function api(path, { method = "GET", json, body, headers, signal, raw = false } = {}) {
  const h = new Headers(headers || {});
  const key = getKey();
  if (key) h.set("X-API-Key", key);
  if (json !== undefined) {
    h.set("Content-Type", "application/json");
    body = JSON.stringify(json);
  }
  const response = await fetch(path, { method, headers: h, body, signal });
  if (!response.ok) {
    let envelope = null;
    try {
      envelope = await response.json();
    } catch {
      envelope = { error: `HTTP ${response.status}`, detail: response.statusText };
    }
    if (response.status === 401) unauthorized();
    throw new ApiError(response.status, envelope);
  }
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

/** An object URL of a binary answer (a PNG plot, a model), fetched with the key. */
export async function blobUrl(path, signal) {
  const response = await api(path, { raw: true, signal });
  return URL.createObjectURL(await response.blob());
}

/** Saves a binary answer as a file, under the name its Content-Disposition gives. */
export async function download(path, fallbackName) {
  const response = await api(path, { raw: true });
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = disposition.match(/filename="?([^";]+)"?/);
  const url = URL.createObjectURL(await response.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = match ? match[1] : fallbackName;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/**
 * Follows an SSE stream: onEvent({event, id, data}) for each event (data parsed as JSON).
 * The server ends a stream after a terminal status; `again()` says whether to reconnect when it
 * ends (then with Last-Event-ID, so nothing is received twice). Returns a stop function.
 */
export function streamEvents(path, { onEvent, onError = () => {}, again = () => false }) {
  const controller = new AbortController();
  let lastId = null;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  async function readOnce() {
    const headers = { Accept: "text/event-stream" };
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    const response = await api(path, { raw: true, headers, signal: controller.signal });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = { event: "message", id: null, data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (event.data.length) {
            if (event.id !== null) lastId = event.id;
            onEvent({ event: event.event, id: event.id, data: JSON.parse(event.data.join("\n")) });
          }
          event = { event: "message", id: null, data: [] };
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let text = colon < 0 ? "" : line.slice(colon + 1);
          if (text.startsWith(" ")) text = text.slice(1);
          if (field === "data") event.data.push(text);
          else if (field === "event") event.event = text;
          else if (field === "id") event.id = text;
        }
      }
    }
  }
  (async () => {
    let failures = 0;
    while (!controller.signal.aborted) {
      try {
        await readOnce();
        failures = 0;
        if (!again()) return;
      } catch (error) {
        if (controller.signal.aborted) return;
        // A refusal (401, 404, 400) will not change by trying again; a dropped connection may.
        if (error instanceof ApiError || ++failures > 30) {
          onError(error);
          return;
        }
      }
      await sleep(1000);
    }
  })();
  return () => controller.abort();
}
