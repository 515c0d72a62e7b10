// Review queue: videos held for a person's decision, each with its player and
// Approve / Reject. The list is read again when the stream says a video was sent
// for review or reviewed (here or by another client).
import { api, coalesce, el, fmtTime, flash, initChrome, requireLogin, stream } from "./vidpipe.js";

const PAGE = 100;
// Events after which a listed video is no longer waiting for anyone.
const GONE = new Set(["video.canceled", "video.deleted", "video.expired", "video.failed", "video.completed"]);
const list = document.getElementById("review-list");
const items = new Map(); // id → <li>

function updateEmpty() {
  document.getElementById("review-loading").hidden = true;
  document.getElementById("review-empty").hidden = items.size > 0;
}

function remove(id) {
  const item = items.get(id);
  if (item) item.remove();
  items.delete(id);
  updateEmpty();
}

async function decide(video, item, decision) {
  const error = item.querySelector(".review-error");
  error.hidden = true;
  const reason = item.querySelector("input[name=reason]").value.trim();
  const regenerate = item.querySelector("input[name=regenerate]").checked;
  if (decision === "reject" && !reason) {
    error.textContent = "Give a reason to reject.";
    error.hidden = false;
    item.querySelector("input[name=reason]").focus();
    return;
  }
  const buttons = item.querySelectorAll("button");
  for (const button of buttons) button.disabled = true;
  try {
    await api("/v1/videos/" + encodeURIComponent(video.id) + "/review", {
      method: "POST",
      body: {
        decision,
        reason: decision === "reject" ? reason : reason || null,
        regenerate: decision === "reject" && regenerate,
      },
    });
    remove(video.id);
  } catch (err) {
    // 409: someone else decided first; it is no longer waiting.
    if (err.status === 409 || err.status === 404) remove(video.id);
    else {
      error.textContent = err.message;
      error.hidden = false;
    }
  } finally {
    for (const button of buttons) button.disabled = false;
  }
}

function renderItem(video) {
  const reasonId = "reason-" + video.id;
  const regenId = "regen-" + video.id;
  const player = el("video", { controls: true, preload: "metadata", playsinline: true, muted: true });
  const item = el(
    "li",
    { class: "card review-item", id: "review-" + video.id, dataset: { videoId: video.id } },
    el("blockquote", { class: "prompt" }, video.prompt || "(no prompt)"),
    el(
      "p",
      { class: "hint" },
      el("a", { href: "/ui/videos/" + encodeURIComponent(video.id) }, video.id),
      ` · ${video.model} · ${video.seconds} s · ${video.size} · ${fmtTime(video.created_at)}`,
    ),
    player,
    el(
      "div",
      { class: "review-actions" },
      el("button", { type: "button", class: "approve", onclick: () => decide(video, item, "approve") }, "Approve"),
      el(
        "div",
        { class: "field" },
        el("label", { for: reasonId }, "Reason (to reject)"),
        el("input", { id: reasonId, name: "reason", type: "text", maxlength: 2000 }),
      ),
      el(
        "label",
        { class: "check", for: regenId },
        el("input", { id: regenId, name: "regenerate", type: "checkbox" }),
        " regenerate",
      ),
      el("button", { type: "button", class: "danger reject", onclick: () => decide(video, item, "reject") }, "Reject"),
    ),
    el("p", { class: "error review-error", role: "alert", hidden: true }),
  );
  api("/ui/api/videos/" + encodeURIComponent(video.id) + "/media")
    .then(({ media }) => {
      if (media.poster) player.poster = media.poster;
      if (media.video) player.src = media.video;
    })
    .catch((err) => flash(err.message));
  return item;
}

async function load() {
  const page = await api("/v1/videos?" + new URLSearchParams({ review_state: "pending", limit: String(PAGE) }));
  const pending = new Set(page.data.map((v) => v.id));
  for (const id of [...items.keys()]) if (!pending.has(id)) remove(id);
  for (const video of page.data) {
    if (items.has(video.id)) continue;
    const item = renderItem(video);
    // Newest first, as the API lists them.
    const before = [...items.keys()].filter((id) => id < video.id).sort().pop();
    if (before) items.get(before).before(item);
    else list.append(item);
    items.set(video.id, item);
  }
  updateEmpty();
}

const reload = coalesce(() => load().catch((err) => flash(err.message)));

document.getElementById("review-refresh").addEventListener("click", () => reload("all"));

if (requireLogin()) {
  initChrome();
  stream("/v1/events", {
    onOpen: () => reload("all"), // also after a reconnect: events may have been missed
    onEvent: (event) => {
      if (event.type === "video.review_requested" || event.type === "video.reviewed") reload("all");
      else if (event.video_id && items.has(event.video_id) && GONE.has(event.type)) remove(event.video_id);
    },
  });
}
