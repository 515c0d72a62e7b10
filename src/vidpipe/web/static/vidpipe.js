// vidpipe UI core: the key, API calls, live events, and DOM helpers.
//
// Every piece of data reaches the DOM through textContent or attributes set one by
// one (never innerHTML), so user text such as prompts is shown, never run.

const KEY_STORAGE = "vidpipe.apiKey";

export const authMode = document.body.dataset.auth === "open" ? "open" : "key";

export function apiKey() {
  return authMode === "key" ? sessionStorage.getItem(KEY_STORAGE) : null;
}

export function setApiKey(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
}

export function signOut() {
  sessionStorage.removeItem(KEY_STORAGE);
  location.assign("/ui/login");
}

/** Sends the browser to the login page (and back here after) when it has no key. */
export function requireLogin() {
  if (authMode === "key" && !apiKey()) {
    toLogin();
    return false;
  }
  return true;
}

function toLogin() {
  const next = location.pathname + location.search;
  location.replace("/ui/login?next=" + encodeURIComponent(next));
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function authHeaders(extra) {
  const headers = new Headers(extra || {});
  const key = apiKey();
  if (key && !headers.has("Authorization")) headers.set("Authorization", "Bearer " + key);
  return headers;
}

/** fetch() with the key; JSON in and out; API errors thrown as ApiError. */
export async function api(path, options = {}) {
  const headers = authHeaders(options.headers);
  const init = { method: options.method || "GET", headers, cache: "no-store" };
  if (options.body !== undefined) {
    headers.set("Content-Type", "application/json");
    init.body = JSON.stringify(options.body);
  }
  let response;
  for (let attempt = 0; ; attempt++) {
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, "network_error", "cannot reach the server: " + err.message);
    }
    // Reads that hit the per-tenant rate limit wait as told and try again.
    if (response.status !== 429 || init.method !== "GET" || attempt >= 3) break;
    const wait = Math.min(Number(response.headers.get("Retry-After")) || 1, 10);
    await new Promise((resolve) => setTimeout(resolve, wait * 1000));
  }
  let body = null;
  const text = await response.text();
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }
  if (!response.ok) {
    const error = (body && body.error) || {};
    if (response.status === 401 && authMode === "key" && !options.noLoginRedirect) {
      sessionStorage.removeItem(KEY_STORAGE);
      toLogin();
    }
    throw new ApiError(
      response.status,
      error.code || "http_" + response.status,
      error.message || response.statusText || "request failed",
    );
  }
  return body;
}

/**
 * Reads a Server-Sent Events stream with fetch(), so the request carries the key
 * (EventSource cannot send headers). Reconnects with Last-Event-ID after a drop, so
 * no event is missed; `until(event)` ends the stream after a final event, then
 * `onEnd(outcome)` runs ("final", or "stop" for 401/404).
 * Returns { close() }.
 */
export function stream(path, { onEvent, onOpen, onEnd, until, lastEventId } = {}) {
  const controller = new AbortController();
  let lastId = lastEventId ? String(lastEventId) : "";
  let retryMs = 2000;
  let failures = 0;
  let closed = false;

  const close = () => {
    closed = true;
    controller.abort();
  };
  addEventListener("pagehide", close);

  async function connectOnce() {
    const headers = authHeaders({ Accept: "text/event-stream" });
    if (lastId) headers.set("Last-Event-ID", lastId);
    const response = await fetch(path, { headers, signal: controller.signal, cache: "no-store" });
    if (response.status === 401 && authMode === "key") {
      sessionStorage.removeItem(KEY_STORAGE);
      toLogin();
      return "stop";
    }
    if (response.status === 404) return "stop";
    if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
    failures = 0;
    setLive("live");
    if (onOpen) onOpen();
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let type = "";
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return "ended";
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, "");
        buffer = buffer.slice(newline + 1);
        if (line === "") {
          if (data.length) {
            let event = null;
            try {
              event = JSON.parse(data.join("\n"));
            } catch {
              event = null;
            }
            if (event) {
              event.type = event.type || type;
              if (onEvent) onEvent(event);
              if (until && until(event)) return "final";
            }
          }
          type = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") data.push(val);
        else if (field === "event") type = val;
        else if (field === "id" && !val.includes("\0")) lastId = val;
        else if (field === "retry" && /^\d+$/.test(val)) retryMs = Number(val);
      }
    }
  }

  (async () => {
    setLive("connecting");
    while (!closed) {
      let outcome;
      try {
        outcome = await connectOnce();
      } catch (err) {
        if (closed) break;
        outcome = "error";
      }
      if (closed) break;
      if (outcome === "stop" || outcome === "final") {
        if (onEnd) onEnd(outcome);
        else setLive(outcome === "final" ? "done" : "idle");
        break;
      }
      failures += 1;
      setLive("reconnecting");
      const wait = Math.min(retryMs * 2 ** Math.min(failures - 1, 4), 30000);
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  })();
  return { close };
}

const LIVE_TEXT = {
  idle: "not connected",
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting… (view may be stale)",
  done: "up to date (final state)",
  settling: "final state; settling…",
};

export function setLive(state) {
  const live = document.getElementById("live");
  if (!live) return;
  live.hidden = false;
  live.dataset.state = state;
  live.textContent = LIVE_TEXT[state] || state;
}

/** el("a", {href: "/x", class: "y"}, "text", child…): text is always text. */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
  return node;
}

export function show(node, visible) {
  node.hidden = !visible;
}

export function fmtTime(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  return new Date(seconds * 1000).toLocaleString();
}

export function fmtUsd(value) {
  if (value === null || value === undefined) return "—";
  const digits = value !== 0 && Math.abs(value) < 0.1 ? 4 : 2;
  return "$" + Number(value).toFixed(digits);
}

export const TERMINAL = new Set(["completed", "failed", "canceled", "expired"]);

const STATUS_TEXT = {
  queued: "Queued",
  in_progress: "In progress",
  completed: "Completed",
  failed: "Failed",
  canceled: "Canceled",
  expired: "Expired",
};

/** The status as a person reads it: "In progress 40%", "Failed", … */
export function statusText(video) {
  const base = STATUS_TEXT[video.status] || video.status;
  return video.status === "in_progress" ? `${base} ${video.progress}%` : base;
}

export function errorText(video) {
  if (!video.error) return "";
  const { code, message } = video.error;
  return message && message !== code ? `${message} (${code})` : code || "";
}

export function flash(message) {
  const box = document.getElementById("flash");
  if (!box) return;
  box.textContent = message;
  box.hidden = !message;
}

/** Header: tenant name, sign-out; resolves to the session (or null). */
export async function initChrome() {
  const signout = document.getElementById("signout");
  if (signout) signout.addEventListener("click", signOut);
  try {
    const session = await api("/ui/api/session");
    const tenant = document.getElementById("tenant");
    if (tenant) {
      tenant.textContent = `tenant ${session.tenant_name}` + (session.scope === "admin" ? " (admin)" : "");
    }
    return session;
  } catch (err) {
    if (err.status !== 401) flash(err.message);
    return null;
  }
}

/**
 * Runs fn for each id at most once at a time, again after if asked meanwhile.
 * The promise a call returns settles after a run that began after that call, so
 * `await reload(...)` always sees fresh data even when a run was already under way
 * (an earlier version returned at once then, and a caller acted on stale data).
 */
export function coalesce(fn) {
  const running = new Map(); // id → the run under way
  const queued = new Map(); // id → the one run that follows it, shared by all who asked
  const run = (id) => {
    if (queued.has(id)) return queued.get(id);
    const current = running.get(id);
    if (current) {
      const next = current
        .catch(() => {})
        .then(() => {
          queued.delete(id);
          return run(id);
        });
      queued.set(id, next);
      return next;
    }
    const started = (async () => {
      try {
        await fn(id);
      } finally {
        running.delete(id);
      }
    })();
    running.set(id, started);
    return started;
  };
  return run;
}

/** A random Idempotency-Key (crypto.randomUUID needs a secure context; this does not). */
export function newIdempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "ui-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
