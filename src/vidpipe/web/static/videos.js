// Videos: the create form and the live list of jobs.
//
// The list follows GET /v1/events: each event names a video, which is then read
// again with GET /v1/videos/{id}, so a row always shows what the API says now.
import {
  api,
  coalesce,
  el,
  errorText,
  flash,
  fmtTime,
  fmtUsd,
  initChrome,
  newIdempotencyKey,
  requireLogin,
  statusText,
  stream,
} from "./vidpipe.js";

const PAGE = 50;
const rows = new Map(); // id → <tr>
let oldestLoaded = null; // the cursor of "Load older videos"
let hasMore = false;
let models = [];
let draftKey = newIdempotencyKey();

const body = document.getElementById("jobs-body");

function costText(video) {
  const { estimated, reserved, actual } = video.cost;
  if (actual) return fmtUsd(actual);
  if (reserved) return fmtUsd(reserved) + " held";
  return estimated ? "est. " + fmtUsd(estimated) : fmtUsd(0);
}

function statusCell(video) {
  const cell = el(
    "td",
    { class: "status" },
    el("span", { class: "badge", "data-status": video.status }, statusText(video)),
  );
  if (video.status === "in_progress") {
    cell.append(
      el("progress", { max: 100, value: video.progress, "aria-label": "Progress" }),
    );
  }
  const reason = errorText(video);
  if (reason) cell.append(el("span", { class: "reason" }, reason));
  return cell;
}

function renderRow(video) {
  return el(
    "tr",
    { id: "job-" + video.id, dataset: { videoId: video.id, status: video.status } },
    el(
      "td",
      { class: "prompt" },
      el("a", { href: "/ui/videos/" + encodeURIComponent(video.id), title: video.prompt }, video.prompt || "(no prompt)"),
      el("span", { class: "id" }, video.id),
    ),
    statusCell(video),
    el("td", {}, video.model),
    el("td", {}, `${video.seconds} s · ${video.size}`),
    el("td", { class: "num" }, costText(video)),
    el("td", {}, fmtTime(video.created_at)),
  );
}

/** Puts the video's row in place, newest first (ids are time-ordered). */
function upsert(video) {
  const row = renderRow(video);
  const current = rows.get(video.id);
  if (current) {
    current.replaceWith(row);
  } else {
    // A video older than the loaded page belongs to a later page, not here.
    if (hasMore && oldestLoaded && video.id < oldestLoaded) return;
    const after = [...rows.keys()].filter((id) => id < video.id).sort().pop();
    const before = [...rows.keys()].filter((id) => id > video.id).sort()[0];
    if (before) rows.get(before).after(row);
    else if (after) rows.get(after).before(row);
    else body.append(row);
  }
  rows.set(video.id, row);
  updateEmpty();
}

function remove(id) {
  const row = rows.get(id);
  if (row) row.remove();
  rows.delete(id);
  updateEmpty();
}

function updateEmpty() {
  document.getElementById("jobs-empty").hidden = rows.size > 0;
}

const refresh = coalesce(async (id) => {
  try {
    upsert(await api("/v1/videos/" + encodeURIComponent(id)));
  } catch (err) {
    if (err.status === 404) remove(id);
    else flash("Could not refresh " + id + ": " + err.message);
  }
});

async function loadPage(after) {
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (after) query.set("after", after);
  const page = await api("/v1/videos?" + query);
  hasMore = page.has_more;
  if (page.last_id) oldestLoaded = page.last_id;
  for (const video of page.data) upsert(video);
  document.getElementById("more").hidden = !hasMore;
  document.getElementById("jobs-loading").hidden = true;
  updateEmpty();
}

// ----- the create form

const form = document.getElementById("create-form");
const modelSelect = document.getElementById("model");
const sizeSelect = document.getElementById("size");
const secondsInput = document.getElementById("seconds");

function fillSizes() {
  const model = models.find((m) => m.id === modelSelect.value);
  const previous = sizeSelect.value;
  sizeSelect.replaceChildren();
  if (!model) return;
  for (const size of model.sizes) sizeSelect.append(el("option", { value: size }, size));
  sizeSelect.value = model.sizes.includes(previous)
    ? previous
    : model.sizes.includes("720x1280")
      ? "720x1280"
      : model.sizes[0];
  secondsInput.min = String(model.min_seconds);
  secondsInput.max = String(model.max_seconds);
  const seconds = Number(secondsInput.value) || 4;
  secondsInput.value = String(Math.min(Math.max(seconds, model.min_seconds), model.max_seconds));
}

async function loadModels(defaultModel) {
  models = (await api("/v1/models")).data;
  modelSelect.replaceChildren();
  for (const model of models) {
    modelSelect.append(el("option", { value: model.id }, model.id));
  }
  if (models.some((m) => m.id === defaultModel)) modelSelect.value = defaultModel;
  fillSizes();
}

modelSelect.addEventListener("change", fillSizes);

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("create-error");
  const done = document.getElementById("create-done");
  const button = document.getElementById("create-button");
  error.hidden = true;
  done.hidden = true;
  button.disabled = true;
  try {
    const video = await api("/v1/videos", {
      method: "POST",
      // One key per draft: a double submit or a retry after a lost answer is one job.
      headers: { "Idempotency-Key": draftKey },
      body: {
        prompt: form.elements.prompt.value,
        model: modelSelect.value,
        seconds: Number(secondsInput.value),
        size: sizeSelect.value,
      },
    });
    draftKey = newIdempotencyKey();
    upsert(video);
    form.elements.prompt.value = "";
    done.replaceChildren(
      "Queued ",
      el("a", { href: "/ui/videos/" + encodeURIComponent(video.id) }, video.id),
      ".",
    );
    done.hidden = false;
  } catch (err) {
    error.textContent = err.message;
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
});

form.elements.prompt.addEventListener("input", () => {
  draftKey = newIdempotencyKey();
});

document.getElementById("more").addEventListener("click", () => {
  loadPage(oldestLoaded).catch((err) => flash(err.message));
});

// ----- start

if (requireLogin()) {
  initChrome().then((session) => {
    loadModels(session ? session.default_model : "").catch((err) => flash(err.message));
  });
  let loaded = false;
  stream("/v1/events", {
    // The stream starts "from now" once its answer arrives, so the list read after
    // that misses nothing; after a reconnect, Last-Event-ID resumes the stream.
    onOpen: () => {
      if (loaded) return;
      loaded = true;
      loadPage(null).catch((err) => flash(err.message));
    },
    onEvent: (event) => {
      if (event.video_id) refresh(event.video_id);
    },
  });
}
