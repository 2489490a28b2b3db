// Talking to the control plane: the bearer token (kept in this tab's sessionStorage, never in
// a URL), JSON requests with problem+json errors, downloads, and the SSE stream read through
// fetch() because EventSource cannot send an Authorization header.

const TOKEN_KEY = "sparsetrain.token";
let onAuthRequired = () => {};

export class AuthRequired extends Error {}

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/** Call `handler(message)` whenever the server answers 401 (no token, or a rejected one). */
export function whenAuthRequired(handler) {
  onAuthRequired = handler;
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(extra = {}) {
  const out = { Accept: "application/json", ...extra };
  const t = token();
  if (t) out.Authorization = `Bearer ${t}`;
  return out;
}

async function failure(response) {
  if (response.status === 401) {
    const hadToken = Boolean(token());
    setToken(null);
    onAuthRequired(hadToken ? "The server did not accept the token." : "");
    return new AuthRequired("a token is needed");
  }
  let message = `${response.status} ${response.statusText}`;
  try {
    const problem = await response.json();
    message = problem.detail || problem.title || message;
  } catch {
    // not problem+json: keep the status line
  }
  return new ApiError(message, response.status);
}

/**
 * `method path` with an optional JSON `body`; resolves to the parsed JSON (or the Response
 * with raw: true). Rejects with AuthRequired on 401 (after calling the auth handler) and
 * ApiError carrying the problem's detail on any other error status.
 */
export async function api(path, { method = "GET", body, raw = false, signal } = {}) {
  const init = { method, headers: headers(), signal, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

/** Whether `candidate` is accepted by the server (checked with a one-job list). */
export async function checkToken(candidate) {
  const response = await fetch("/v1/jobs?limit=1", {
    headers: { Accept: "application/json", Authorization: `Bearer ${candidate}` },
    cache: "no-store",
  });
  return response.ok;
}

/** Fetch `path` with the token and save the body as `filename`. */
export async function download(path, filename) {
  const response = await api(path, { raw: true });
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function parseBlock(block) {
  const event = { event: "message", data: "", id: null };
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event.event = value;
    else if (field === "data") data.push(value);
    else if (field === "id") event.id = value;
  }
  event.data = data.join("\n");
  return event;
}

function pause(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * Follow the Server-Sent Events at `path` until `onEvent` returns "stop", the stream ends
 * with an `end` event, or `signal` aborts. A dropped connection is resumed after a pause
 * with Last-Event-ID. `onState` hears "live", "reconnecting" and "ended".
 */
export async function follow(path, { onEvent, onState = () => {}, signal }) {
  let lastId = null;
  while (!signal.aborted) {
    try {
      const extra = { Accept: "text/event-stream" };
      if (lastId) extra["Last-Event-ID"] = lastId;
      const response = await fetch(path, { headers: headers(extra), signal, cache: "no-store" });
      if (!response.ok) throw await failure(response);
      onState("live");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = parseBlock(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
          if (event.id) lastId = event.id;
          if (onEvent(event) === "stop" || event.event === "end") {
            onState("ended");
            await reader.cancel();
            return;
          }
        }
      }
    } catch (error) {
      if (signal.aborted || error instanceof AuthRequired) return;
      if (error instanceof ApiError && error.status === 404) {
        onState("ended");
        return;
      }
    }
    onState("reconnecting");
    await pause(2000, signal);
  }
}
