// Sign in: check the pasted key against the server, keep it in this tab, go on.
import { api, authMode, setApiKey } from "./vidpipe.js";

function nextPath() {
  const wanted = new URLSearchParams(location.search).get("next") || "/ui/";
  try {
    const url = new URL(wanted, location.origin);
    // Only back into the UI on this origin: no open redirect.
    if (url.origin === location.origin && url.pathname.startsWith("/ui/")) {
      return url.pathname + url.search;
    }
  } catch {
    // fall through
  }
  return "/ui/";
}

const form = document.getElementById("login-form");
if (form && authMode === "key") {
  const error = document.getElementById("login-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = form.elements.key.value.trim();
    error.hidden = true;
    try {
      await api("/ui/api/session", {
        headers: { Authorization: "Bearer " + key },
        noLoginRedirect: true,
      });
    } catch (err) {
      error.textContent =
        err.status === 401 ? "This key is not valid (unknown or revoked)." : err.message;
      error.hidden = false;
      return;
    }
    setApiKey(key);
    location.replace(nextPath());
  });
}
