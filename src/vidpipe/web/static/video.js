// One video: status, progress, steps, attempts, cost, the live timeline, the player.
//
// The page reads /ui/api/videos/{id}/detail, then follows /v1/videos/{id}/events from
// the last event it has (Last-Event-ID), reading the detail again after each event.
import {
  api,
  clear,
  coalesce,
  el,
  errorText,
  fmtTime,
  fmtUsd,
  initChrome,
  newIdempotencyKey,
  requireLogin,
  setLive,
  statusText,
  stream,
  TERMINAL,
} from "./vidpipe.js";

const videoId = document.body.dataset.videoId;
const base = "/v1/videos/" + encodeURIComponent(videoId);
const events = new Map(); // id → event
let detail = null;
let live = null;
let playerReady = false;

const $ = (id) => document.getElementById(id);

function fact(list, name, value) {
  list.append(el("dt", {}, name), el("dd", {}, value === null || value === undefined || value === "" ? "—" : value));
}

function renderSummary(video) {
  $("prompt").textContent = video.prompt || "(no prompt)";
  const status = $("status");
  status.textContent = statusText(video);
  status.dataset.status = video.status;
  document.body.dataset.status = video.status;
  $("progress").value = video.progress;
  $("progress").hidden = TERMINAL.has(video.status);
  $("progress-text").textContent = TERMINAL.has(video.status) ? "" : `${video.progress}%`;
  const error = $("error");
  const reason = errorText(video);
  const label = { failed: "Why it failed: ", canceled: "Canceled: ", expired: "Expired: " };
  error.hidden = !reason;
  error.dataset.status = video.status;
  error.replaceChildren(el("strong", {}, label[video.status] || "Error: "), reason);
  $("cancel").hidden = TERMINAL.has(video.status);
  // A failed video can go on from its failed steps; what succeeded is reused.
  $("resume").hidden = video.status !== "failed";
  document.title = `${statusText(video)} · ${video.prompt || videoId} · vidpipe`;
}

function renderFacts(video) {
  const facts = clear($("facts"));
  fact(facts, "Model", video.model);
  fact(facts, "Length", `${video.seconds} s`);
  fact(facts, "Size", video.size);
  fact(facts, "Seed", video.seed);
  fact(facts, "Created", fmtTime(video.created_at));
  fact(facts, TERMINAL.has(video.status) ? "Finished" : "Completed", fmtTime(video.completed_at));
  fact(facts, "Files kept until", fmtTime(video.expires_at));
  const meta = Object.entries(video.metadata || {});
  if (meta.length) fact(facts, "Metadata", meta.map(([k, v]) => `${k}=${v}`).join(", "));
  const cost = clear($("cost"));
  fact(cost, "Estimated", fmtUsd(video.cost.estimated));
  fact(cost, "Reserved now", fmtUsd(video.cost.reserved));
  fact(cost, "Actual", fmtUsd(video.cost.actual));
}

function renderSteps(steps) {
  const tbody = clear($("steps").tBodies[0]);
  for (const step of steps) {
    const error = step.error_code ? `${step.error_message || ""} (${step.error_code})` : "";
    tbody.append(
      el(
        "tr",
        { dataset: { state: step.state } },
        el("td", {}, step.name),
        el("td", {}, step.model, step.fallbacks.length ? el("span", { class: "id" }, "then " + step.fallbacks.join(", ")) : null),
        el("td", {}, el("span", { class: "badge", "data-status": step.state }, step.state)),
        el("td", { class: "num" }, `${step.progress}%`),
        el("td", { class: "num" }, String(step.attempt_count)),
        el("td", { class: "reason" }, error),
      ),
    );
  }
}

function renderAttempts(attempts) {
  const tbody = clear($("attempts").tBodies[0]);
  $("attempts-empty").hidden = attempts.length > 0;
  for (const a of attempts) {
    const error = a.error_code
      ? [a.error_class ? `[${a.error_class}] ` : "", a.error_message || "", ` (${a.error_code})`].join("")
      : "";
    const cost = a.cost_usd !== null ? fmtUsd(a.cost_usd) : a.money_state === "reserved" ? fmtUsd(a.reserved_usd) + " held" : "—";
    tbody.append(
      el(
        "tr",
        { dataset: { state: a.state } },
        el("td", { class: "num" }, String(a.number)),
        el("td", {}, a.step),
        el("td", {}, a.model),
        el("td", {}, el("span", { class: "badge", "data-status": a.state }, a.state)),
        el("td", { class: "reason" }, error),
        el("td", { class: "num" }, cost),
        el("td", { class: "id" }, a.provider_job_id || "—"),
        el("td", {}, fmtTime(a.created_at)),
        el("td", {}, fmtTime(a.finished_at)),
      ),
    );
  }
}

function eventSummary(event) {
  const data = event.data || {};
  const parts = [];
  for (const [key, value] of Object.entries(data)) {
    if (value === null || value === undefined || key === "status") continue;
    parts.push(`${key}: ${typeof value === "object" ? JSON.stringify(value) : value}`);
  }
  return parts.join(" · ");
}

function renderEvents() {
  const list = clear($("events"));
  const sorted = [...events.values()].sort((a, b) => a.id - b.id);
  for (const event of sorted) {
    list.append(
      el(
        "li",
        { dataset: { type: event.type } },
        el("time", {}, fmtTime(event.created_at)),
        el("span", { class: "event-type" }, event.type),
        el("span", { class: "event-data" }, eventSummary(event)),
      ),
    );
  }
}

function renderPlayer(media) {
  if (playerReady || !media || !media.video) return;
  playerReady = true;
  const player = $("player");
  if (media.poster) player.poster = media.poster;
  player.src = media.video;
  // Media links expire (VIDPIPE_SIGNED_URL_TTL_S): after a long pause, fetch new ones once.
  player.addEventListener(
    "error",
    async () => {
      try {
        const fresh = await api("/ui/api/videos/" + encodeURIComponent(videoId) + "/detail");
        if (fresh.media && fresh.media.video) {
          const at = player.currentTime;
          player.src = fresh.media.video;
          player.currentTime = at;
        }
      } catch (err) {
        showError(err);
      }
    },
    { once: true },
  );
  if (media.thumbnail) {
    $("thumbnail").src = media.thumbnail;
    $("thumb-figure").hidden = false;
  }
  const downloads = clear($("downloads"));
  const names = { video: "Video (MP4)", poster: "Poster (JPEG)", thumbnail: "Thumbnail (JPEG)", manifest: "Manifest (JSON)" };
  const files = { video: ".mp4", poster: "-poster.jpg", thumbnail: "-thumbnail.jpg", manifest: "-manifest.json" };
  for (const variant of ["video", "poster", "thumbnail", "manifest"]) {
    if (!media[variant]) continue;
    downloads.append(
      el("li", {}, el("a", { href: media[variant], download: videoId + files[variant], "data-variant": variant }, "Download " + names[variant])),
    );
  }
  $("player-card").hidden = false;
}

function render() {
  const video = detail.video;
  renderSummary(video);
  renderFacts(video);
  renderSteps(detail.steps);
  renderAttempts(detail.attempts);
  for (const event of detail.events) events.set(event.id, event);
  renderEvents();
  renderPlayer(detail.media);
  $("loading").hidden = true;
  $("video").hidden = false;
  watchSettling();
  // A job that runs (again: resumed here or elsewhere) is followed live.
  if (!TERMINAL.has(video.status)) follow();
}

const STEP_DONE = new Set(["succeeded", "failed", "canceled", "expired"]);
let settleTimer = null;
let settleReads = 0;

function settled() {
  return (
    detail.steps.every((step) => STEP_DONE.has(step.state)) &&
    !detail.attempts.some((attempt) => attempt.money_state === "reserved") &&
    !detail.video.cost.reserved
  );
}

/**
 * After its final state a job may still be settling: a worker stops the provider job
 * of a canceled video and releases its money. The video's stream has ended by then,
 * so read the detail again until nothing is pending (for a few minutes at most).
 */
function watchSettling() {
  if (!TERMINAL.has(detail.video.status)) return;
  if (settled()) {
    setLive("done");
    return;
  }
  setLive("settling");
  if (settleTimer || settleReads >= 60) return;
  settleTimer = setTimeout(() => {
    settleTimer = null;
    settleReads += 1;
    reload("detail");
  }, settleReads < 20 ? 1000 : 5000);
}

const reload = coalesce(async () => {
  try {
    detail = await api("/ui/api/videos/" + encodeURIComponent(videoId) + "/detail");
    render();
  } catch (err) {
    showError(err);
  }
});

function showError(err) {
  if (err.status === 404) {
    $("loading").textContent = "No such video (or it was deleted).";
    $("loading").hidden = false;
    $("video").hidden = true;
  } else {
    $("action-error").textContent = err.message;
    $("action-error").hidden = false;
  }
}

function follow() {
  if (live || TERMINAL.has(detail.video.status)) return;
  const lastId = Math.max(0, ...[...events.keys()]);
  live = stream(base + "/events", {
    lastEventId: lastId || null,
    onEvent: (event) => {
      events.set(event.id, event);
      renderEvents();
      reload("detail");
    },
    until: (event) => TERMINAL.has(event.type.replace(/^video\./, "")) || event.type === "video.deleted",
    onEnd: () => {
      live = null; // a later run of the job (a resume) gets a stream of its own
      reload("detail");
    },
  });
}

$("cancel").addEventListener("click", async () => {
  $("action-error").hidden = true;
  $("cancel").disabled = true;
  try {
    const video = await api(base + "/cancel", { method: "POST" });
    renderSummary(video);
    reload("detail");
  } catch (err) {
    showError(err);
  } finally {
    $("cancel").disabled = false;
  }
});

$("resume").addEventListener("click", async () => {
  $("action-error").hidden = true;
  $("resume").disabled = true;
  try {
    const video = await api(base + "/retry", { method: "POST" });
    renderSummary(video);
    // The earlier event stream ended with the failure: follow the new run.
    if (live && typeof live.close === "function") live.close();
    live = null;
    await reload("detail"); // render() follows the resumed run
  } catch (err) {
    showError(err);
  } finally {
    $("resume").disabled = false;
  }
});

$("retry").addEventListener("click", async () => {
  $("action-error").hidden = true;
  $("retry").disabled = true;
  try {
    const video = await api(detail.retry_endpoint || "/v1/videos", {
      method: "POST",
      headers: { "Idempotency-Key": newIdempotencyKey() },
      body: detail.retry_request,
    });
    location.assign("/ui/videos/" + encodeURIComponent(video.id));
  } catch (err) {
    showError(err);
    $("retry").disabled = false;
  }
});

if (requireLogin()) {
  initChrome();
  (async () => {
    await reload("detail"); // render() follows a running job
  })();
}
