// API keys of the tenant: list (prefixes only), create (the key shown once), revoke.
import { api, clear, el, flash, fmtTime, initChrome, requireLogin } from "./vidpipe.js";

const $ = (id) => document.getElementById(id);

function render(keys) {
  const tbody = clear($("keys").tBodies[0]);
  $("keys-empty").hidden = keys.length > 0;
  for (const key of keys) {
    const status = key.revoked_at ? `revoked ${fmtTime(key.revoked_at)}` : "active";
    const revoke = key.revoked_at
      ? null
      : el(
          "button",
          {
            type: "button",
            class: "danger small",
            "aria-label": `Revoke key ${key.prefix}`,
            onclick: () => revokeKey(key),
          },
          "Revoke",
        );
    tbody.append(
      el(
        "tr",
        { dataset: { keyId: key.id, prefix: key.prefix } },
        el("td", {}, key.name || "—"),
        el("td", {}, el("code", {}, key.prefix + "_…")),
        el("td", {}, key.scope),
        el("td", {}, fmtTime(key.created_at)),
        el("td", {}, fmtTime(key.last_used_at)),
        el("td", {}, status, key.current ? el("span", { class: "id" }, "this browser's key") : null),
        el("td", {}, revoke),
      ),
    );
  }
}

async function load() {
  try {
    render((await api("/ui/api/keys")).data);
  } catch (err) {
    flash(err.message);
  }
}

async function revokeKey(key) {
  const warning = key.current
    ? `Revoke ${key.prefix}? It is the key this browser uses: you will be signed out.`
    : `Revoke ${key.prefix}? Programs using it stop working within seconds.`;
  if (!confirm(warning)) return;
  try {
    await api(`/ui/api/keys/${encodeURIComponent(key.id)}/revoke`, { method: "POST" });
    await load();
  } catch (err) {
    flash(err.message);
  }
}

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  $("key-error").hidden = true;
  try {
    const created = await api("/ui/api/keys", {
      method: "POST",
      body: { name: form.elements.name.value || null, scope: form.elements.scope.value },
    });
    $("new-key-value").value = created.key;
    $("new-key").hidden = false;
    $("new-key-value").select();
    form.reset();
    await load();
  } catch (err) {
    $("key-error").textContent = err.message;
    $("key-error").hidden = false;
  }
});

$("copy-key").addEventListener("click", async () => {
  const input = $("new-key-value");
  input.select();
  try {
    await navigator.clipboard.writeText(input.value);
    $("copy-key").textContent = "Copied";
  } catch {
    $("copy-key").textContent = "Press Ctrl+C";
  }
});

if (requireLogin()) {
  initChrome().then((session) => {
    if (session && session.scope === "admin") {
      $("key-scope").append(el("option", { value: "admin" }, "admin"));
    }
  });
  load();
}
