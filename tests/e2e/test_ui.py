"""The web UI in a real browser (Debian's Chromium, driven by Playwright) against a real
``vidpipe serve``: jobs go live from queued to completed without a reload, the video
plays, failures show their reason, user text stays text, costs draw a chart."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.e2e.ui_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PRICE_PER_SECOND_USD,
    Server,
    require_chromium,
    serving,
)

# Generous per test: the first one also starts two servers and the browser.
pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

HOSTILE = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> & "quotes"'


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    require_chromium()
    with serving(tmp_path_factory.mktemp("ui")) as both:
        yield both


@pytest.fixture(scope="module")
def browser(servers: tuple[Server, Server]) -> Iterator[Browser]:
    """Chromium, launched while the servers start."""
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server(servers: tuple[Server, Server], browser: Browser) -> Server:
    """The server with API keys."""
    return servers[0].wait_ready()


@pytest.fixture(scope="module")
def open_server(servers: tuple[Server, Server], browser: Browser) -> Server:
    """The server with auth off."""
    return servers[1].wait_ready()


class Tab:
    """A page in a fresh browser context; uncaught script errors and CSP violations
    fail the test."""

    def __init__(self, browser: Browser, server: Server, *, signed_in: bool) -> None:
        self.server = server
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        if signed_in and server.key:
            # What the login page stores; the login flow itself has its own test.
            self.context.add_init_script(
                f"sessionStorage.setItem('vidpipe.apiKey', {json.dumps(server.key)})"
            )
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("console", self._console)
        self.page.set_default_timeout(15_000)

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.errors.append(f"CSP: {message.text}")

    def goto(self, path: str) -> Page:
        self.page.goto(self.server.url + path)
        return self.page

    def shot(self, artifacts: Path, name: str) -> None:
        self.page.screenshot(path=str(artifacts / f"ui-{name}.png"), full_page=True)


@pytest.fixture
def tab(browser: Browser, server: Server) -> Iterator[Tab]:
    opened = Tab(browser, server, signed_in=True)
    yield opened
    opened.context.close()
    assert not opened.errors, opened.errors


def _record_row_statuses(page: Page) -> None:
    """Remember every status any row shows, and mark this document (a reload drops it)."""
    page.evaluate(
        """() => {
          window.__sameDocument = true;
          window.__seen = {};
          const note = () => {
            for (const row of document.querySelectorAll('#jobs-body tr')) {
              const seen = (window.__seen[row.dataset.videoId] ||= []);
              if (seen[seen.length - 1] !== row.dataset.status) seen.push(row.dataset.status);
            }
          };
          new MutationObserver(note).observe(document.getElementById('jobs-body'),
            {childList: true, subtree: true, attributes: true});
        }"""
    )


def _fill_create_form(page: Page, prompt: str, model: str) -> str:
    page.fill("#prompt", prompt)
    page.select_option("#model", model)
    page.select_option("#size", "640x360")
    page.fill("#seconds", "1")
    page.click("#create-button")
    link = page.locator("#create-done a")
    expect(link).to_be_visible()
    return link.inner_text()


def test_login_then_a_new_video_goes_live_to_completed_and_plays(
    browser: Browser, server: Server, artifacts_dir: Path
) -> None:
    tab = Tab(browser, server, signed_in=False)
    page = tab.goto("/")
    page.wait_for_url(re.compile(r"/ui/login\?next="))
    page.fill("#key", "vp_wrong_key")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("not valid")
    tab.shot(artifacts_dir, "login")
    page.fill("#key", server.key or "")
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/ui/")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    expect(page.locator("#tenant")).to_contain_text("acme")

    _record_row_statuses(page)
    video_id = _fill_create_form(page, "a paper boat on a calm lake", "local/procedural")
    row = page.locator(f"#jobs-body tr[data-video-id='{video_id}']")
    expect(row).to_have_attribute("data-status", re.compile("queued|in_progress"))
    tab.shot(artifacts_dir, "videos-running")
    expect(row).to_have_attribute("data-status", "completed", timeout=30_000)
    seen = page.evaluate(f"() => window.__seen[{json.dumps(video_id)}]")
    assert page.evaluate("() => window.__sameDocument") is True  # never reloaded
    assert seen[-1] == "completed"
    # Queued comes from the create response; in progress can only come from the stream.
    assert "in_progress" in seen[:-1], seen
    expect(row.locator(".badge")).to_have_text("Completed")
    expect(row.locator("td.num")).to_have_text(f"${PRICE_PER_SECOND_USD:.4f}")
    tab.shot(artifacts_dir, "videos")

    row.locator("td.prompt a").click()
    page.wait_for_url(f"{server.url}/ui/videos/{video_id}")
    expect(page.locator("#status")).to_have_text("Completed")
    page.wait_for_function("() => document.getElementById('player').readyState >= 2")
    played = page.evaluate(
        """async () => {
          const v = document.getElementById('player');
          v.muted = true;
          await v.play();
          await new Promise((resolve) => setTimeout(resolve, 400));
          v.pause();
          return {time: v.currentTime, duration: v.duration, width: v.videoWidth,
                  height: v.videoHeight, state: v.readyState};
        }"""
    )
    assert played["state"] >= 2, played
    assert played["time"] > 0, played
    assert (played["width"], played["height"]) == (640, 360)
    assert abs(played["duration"] - 1.0) < 0.15, played
    page.wait_for_function("() => document.getElementById('thumbnail').naturalWidth > 0")
    expect(page.locator("#events li[data-type='video.completed']")).to_have_count(1)
    expect(page.locator("#attempts tbody tr")).to_have_count(1)
    expect(page.locator("#cost")).to_contain_text(f"${PRICE_PER_SECOND_USD:.4f}")
    expect(page.locator("#cancel")).to_be_hidden()

    links = {
        a.get_attribute("data-variant"): a.get_attribute("href")
        for a in page.locator("#downloads a").all()
    }
    assert set(links) == {"video", "poster", "thumbnail", "manifest"}
    video = page.request.get(server.url + str(links["video"]), headers={"Range": "bytes=0-99"})
    assert video.status == 206
    assert video.headers["content-type"] == "video/mp4"
    manifest = page.request.get(server.url + str(links["manifest"]))
    assert manifest.status == 200
    unsigned = page.request.get(f"{server.url}/ui/media/{video_id}/video")
    assert unsigned.status == 403
    tampered = page.request.get(server.url + str(links["video"]).replace("/video?", "/poster?"))
    assert tampered.status == 403
    tab.shot(artifacts_dir, "video-completed")
    tab.context.close()
    assert not tab.errors, tab.errors


def test_a_failed_video_shows_its_reason(tab: Tab, artifacts_dir: Path) -> None:
    page = tab.goto("/ui/")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    video_id = _fill_create_form(page, "a storm at sea", "simulated/sim-1")
    row = page.locator(f"#jobs-body tr[data-video-id='{video_id}']")
    expect(row).to_have_attribute("data-status", "failed", timeout=20_000)
    expect(row.locator(".reason")).to_contain_text("content filter")
    tab.shot(artifacts_dir, "videos-failed")

    row.locator("td.prompt a").click()
    expect(page.locator("#status")).to_have_text("Failed")
    expect(page.locator("#error")).to_contain_text("content filter")
    expect(page.locator("#error")).to_contain_text("content_policy")
    attempt = page.locator("#attempts tbody tr")
    expect(attempt).to_have_attribute("data-state", "failed")
    expect(attempt.locator("td.reason")).to_contain_text("[permanent]")
    expect(page.locator("#events li[data-type='video.failed']")).to_have_count(1)
    expect(page.locator("#player-card")).to_be_hidden()
    tab.shot(artifacts_dir, "video-failed")


def test_prompts_and_ids_are_shown_as_text_never_run(
    tab: Tab, server: Server, artifacts_dir: Path
) -> None:
    video = server.create_video(prompt=HOSTILE, model="simulated/sim-1")
    page = tab.goto("/ui/")
    link = page.locator(f"#jobs-body tr[data-video-id='{video['id']}'] td.prompt a")
    expect(link).to_have_text(HOSTILE)
    page.goto(f"{server.url}/ui/videos/{video['id']}")
    expect(page.locator("#prompt")).to_have_text(HOSTILE)
    tab.shot(artifacts_dir, "video-hostile-prompt")

    hostile_id = '"><img src=x onerror="window.__xss=3">'
    page.goto(f"{server.url}/ui/videos/{hostile_id}")
    expect(page.locator("#video-id")).to_have_text(hostile_id)
    expect(page.locator("#loading")).to_contain_text("No such video")
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("img[src=x]").count() == 0
    assert page.evaluate("() => document.body.dataset.videoId") == hostile_id


def test_the_list_follows_videos_made_and_deleted_elsewhere(tab: Tab, server: Server) -> None:
    page = tab.goto("/ui/")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    expect(page.locator("#jobs-loading")).to_be_hidden()
    page.evaluate("() => { window.__sameDocument = true; }")
    video = server.create_video(prompt="made by another client", model="simulated/sim-1")
    row = page.locator(f"#jobs-body tr[data-video-id='{video['id']}']")
    expect(row).to_have_attribute("data-status", "failed")
    assert page.locator("#jobs-body tr").first.get_attribute("data-video-id") == video["id"]
    assert server.api("DELETE", f"/v1/videos/{video['id']}").status_code == 200
    expect(row).to_have_count(0)
    assert page.evaluate("() => window.__sameDocument") is True


def test_ui_json_routes_keep_to_the_callers_tenant(server: Server) -> None:
    video = server.create_video(prompt="acme's own", model="simulated/sim-1")
    other = {"Authorization": f"Bearer {server.other_key}"}
    detail = server.api("GET", f"/ui/api/videos/{video['id']}/detail")
    assert detail.status_code == 200
    assert detail.json()["video"]["prompt"] == "acme's own"
    assert detail.json()["retry_request"]["prompt"] == "acme's own"
    assert server.api("GET", f"/ui/api/videos/{video['id']}/detail", other).status_code == 404
    acme_keys = server.api("GET", "/ui/api/keys").json()["data"]
    globex_keys = server.api("GET", "/ui/api/keys", other).json()["data"]
    assert {k["id"] for k in acme_keys}.isdisjoint(k["id"] for k in globex_keys)
    assert all("key" not in k for k in acme_keys + globex_keys)  # never a secret
    revoke = server.api("POST", f"/ui/api/keys/{acme_keys[0]['id']}/revoke", other)
    assert revoke.status_code == 404
    unauthenticated = httpx.get(f"{server.url}/ui/api/keys", timeout=10)
    assert unauthenticated.status_code == 401
    page = httpx.get(f"{server.url}/ui/", timeout=10)
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(f"{server.url}/ui/static/..%2Fdata.py", timeout=10).status_code == 404


def test_cancel_then_run_again_with_the_same_parameters(
    tab: Tab, server: Server, artifacts_dir: Path
) -> None:
    video = server.create_video(prompt="a slow sunrise", model="local/procedural", seed=7)
    page = tab.goto(f"/ui/videos/{video['id']}")
    cancel = page.locator("#cancel")
    expect(cancel).to_be_visible()
    cancel.click()
    expect(page.locator("#status")).to_have_text("Canceled")
    expect(page.locator("body")).to_have_attribute("data-status", "canceled")
    expect(cancel).to_be_hidden()
    expect(page.locator("#error")).to_contain_text("Canceled: canceled by request")
    # The worker then stops the provider job and releases the money: the page follows.
    expect(page.locator("#steps tbody tr")).to_have_attribute("data-state", "canceled")
    expect(page.locator("#cost")).to_contain_text("Reserved now$0.00")
    expect(page.locator("#live")).to_have_attribute("data-state", "done")
    tab.shot(artifacts_dir, "video-canceled")

    page.click("#retry")
    page.wait_for_url(lambda url: "/ui/videos/video_" in url and video["id"] not in url)
    again = page.url.rsplit("/", 1)[-1]
    expect(page.locator("#prompt")).to_have_text("a slow sunrise")
    copy = server.api("GET", f"/v1/videos/{again}").json()
    assert (copy["model"], copy["seconds"], copy["size"], copy["seed"]) == (
        "local/procedural",
        "1",
        "640x360",
        7,
    )
    page.locator("#cancel").click()  # leave the worker free for the other tests
    expect(page.locator("#status")).to_have_text("Canceled")


def test_a_failed_plan_resumes_from_its_failed_step(
    tab: Tab, server: Server, artifacts_dir: Path
) -> None:
    plan = {
        "title": "boat with a bed",
        "steps": [
            {
                "name": "shot",
                "kind": "clip",
                "params": {
                    "prompt": "a boat",
                    "model": "local/procedural",
                    "seconds": 1,
                    "size": "640x360",
                },
            },
            {
                "name": "bed",
                "kind": "music",
                "params": {"source": "library", "name": "bed.wav", "seconds": 2},
            },
            {
                "name": "final",
                "kind": "merge",
                "params": {"clips": [{"$ref": "shot"}], "audio": {"$ref": "bed"}},
            },
        ],
    }
    response = server.api("POST", "/v1/jobs", json=plan)
    assert response.status_code == 202, response.text
    video_id = response.json()["id"]
    page = tab.goto(f"/ui/videos/{video_id}")
    expect(page.locator("#status")).to_have_text("Failed", timeout=30_000)
    expect(page.locator("#error")).to_contain_text("music_not_found")
    expect(page.locator("#steps tbody tr")).to_have_count(3)
    resume = page.locator("#resume")
    expect(resume).to_be_visible()
    tab.shot(artifacts_dir, "plan-failed")

    # The bed appears in the library; resuming runs the failed steps only.
    from vidpipe.media.ffmpeg import find_ffmpeg
    from vidpipe.plans.music import generate_music

    library = server.home / "music"
    library.mkdir(exist_ok=True)
    generate_music(library / "bed.wav", seconds=2, mood="calm", seed=3, ffmpeg=find_ffmpeg())
    resume.click()
    expect(page.locator("#status")).to_have_text("Completed", timeout=45_000)
    expect(resume).to_be_hidden()
    expect(page.locator("#steps tbody tr[data-state='succeeded']")).to_have_count(3)
    expect(page.locator("#events li[data-type='video.retried']")).to_have_count(1)
    steps = server.api("GET", f"/v1/videos/{video_id}/steps").json()["data"]
    assert {s["name"]: s["attempts"] for s in steps}["shot"] == 1
    tab.shot(artifacts_dir, "plan-resumed")


def test_a_reload_asked_for_during_another_waits_for_a_fresh_one(tab: Tab) -> None:
    """`await reload()` while a read is under way must see data read after the call.

    The resume button awaited a reload, then followed the job only if it was running;
    a read already under way made that await return at once with the old, failed
    state, so the page never followed the resumed run (a CI failure).
    """
    page = tab.goto("/ui/videos")
    outcome = page.evaluate(
        """async () => {
          const { coalesce } = await import('/ui/static/vidpipe.js');
          let version = 0, runs = 0, seen = -1;
          const read = coalesce(async () => {
            runs += 1;
            const v = version;
            await new Promise((resolve) => setTimeout(resolve, 50));
            seen = v;
          });
          const first = read('detail');
          version = 1;
          const asked = [read('detail'), read('detail'), read('detail')];
          await asked[0];
          const seenByLate = seen;
          await Promise.all([first, ...asked]);
          const other = coalesce(async () => { throw new Error('boom'); });
          const failing = other('x');
          const afterFailure = other('x');
          const settled = await Promise.allSettled([failing, afterFailure]);
          return { seenByLate, runs, settled: settled.map((s) => s.status) };
        }"""
    )
    # Three calls during the first run share one more run, and see its data.
    assert outcome == {"seenByLate": 1, "runs": 2, "settled": ["rejected", "rejected"]}


def test_costs_page_draws_spend_per_day_and_provider_and_follows_it_live(
    tab: Tab, server: Server, artifacts_dir: Path
) -> None:
    page = tab.goto("/ui/costs")
    chart = page.locator("svg.spend-chart")
    expect(chart).to_be_visible()
    before = float(chart.get_attribute("data-total") or 0)
    server.create_video(prompt="a priced clip", model="local/procedural")
    # The page reads usage again when the job's money settles: no reload.
    page.wait_for_function(
        f"""() => Number(document.querySelector('svg.spend-chart').dataset.total)
                  >= {before + PRICE_PER_SECOND_USD - 1e-9}""",
        timeout=30_000,
    )
    bars = page.locator("svg.spend-chart rect.bar[data-provider='local']")
    assert bars.count() >= 1
    assert float(bars.first.get_attribute("height") or 0) > 1
    expect(page.locator(".legend")).to_contain_text("local")
    budgets = page.locator("#budgets tbody tr")
    expect(budgets).to_have_count(2)
    tenant_month = page.locator("#budgets tr[data-period='month']")
    expect(tenant_month).to_contain_text("tenant acme")
    expect(tenant_month).to_contain_text("$20.00")
    left = tenant_month.locator("td.left").inner_text()
    assert float(left.lstrip("$")) < 20.0
    tab.shot(artifacts_dir, "costs")


def test_keys_page_lists_prefixes_and_shows_a_new_key_once(
    tab: Tab, server: Server, artifacts_dir: Path
) -> None:
    assert server.key
    page = tab.goto("/ui/keys")
    prefix = "_".join(server.key.split("_")[:2])  # vp_XXXXXXXX
    mine = page.locator(f"#keys tr[data-prefix='{prefix}']")
    expect(mine).to_contain_text("this browser's key")
    assert server.key not in page.content()
    assert page.locator("#key-scope option[value=admin]").count() == 0  # a user key

    page.fill("#key-name", "ci-runner-7")
    page.click("#key-form button[type=submit]")
    secret = page.locator("#new-key-value")
    expect(secret).to_have_value(re.compile(r"^vp_\w+_[\w-]{20,}$"))
    new_key = secret.input_value()
    row = page.locator("#keys tbody tr", has_text="ci-runner-7")
    expect(row).to_contain_text("active")
    tab.shot(artifacts_dir, "keys")
    with_new = server.api("GET", "/ui/api/session", headers={"Authorization": f"Bearer {new_key}"})
    assert with_new.status_code == 200
    assert with_new.json()["tenant_name"] == "acme"
    escalate = server.api("POST", "/ui/api/keys", json={"scope": "admin"})
    assert escalate.status_code == 403

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=re.compile("Revoke")).click()
    expect(row).to_contain_text("revoked")
    page.reload()
    expect(page.locator("#keys tbody tr", has_text="ci-runner-7")).to_contain_text("revoked")
    expect(page.locator("#new-key")).to_be_hidden()
    assert new_key not in page.content()


def test_with_auth_off_no_login_is_needed(
    browser: Browser, open_server: Server, artifacts_dir: Path
) -> None:
    tab = Tab(browser, open_server, signed_in=False)
    page = tab.goto("/")
    page.wait_for_url(open_server.url + "/ui/")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    expect(page.locator(".auth-off")).to_be_visible()
    expect(page.locator("#signout")).to_have_count(0)
    expect(page.locator("#tenant")).to_contain_text("default")
    expect(page.locator("#model")).to_have_value("local/procedural")
    expect(page.locator("#jobs-empty")).to_be_visible()
    tab.shot(artifacts_dir, "videos-auth-off")
    page.goto(open_server.url + "/ui/login")
    expect(page.locator("main")).to_contain_text("no key is needed")
    tab.context.close()
    assert not tab.errors, tab.errors


def test_review_queue_plays_a_held_video_and_approves_it(
    tab: Tab, server: Server, artifacts_dir: Path
) -> None:
    page = tab.goto("/ui/review")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    expect(page.locator("nav a[aria-current=page]")).to_have_text("Review")
    video = server.create_video(
        prompt="a lighthouse <b>at</b> dusk", model="local/procedural", review=True
    )
    item = page.locator(f"#review-list li[data-video-id='{video['id']}']")
    # Arrives live, from the video.review_requested event: no reload, no click.
    expect(item).to_be_visible(timeout=30_000)
    expect(item.locator(".prompt")).to_have_text("a lighthouse <b>at</b> dusk")
    assert server.api("GET", f"/v1/videos/{video['id']}").json()["status"] == "in_progress"
    player = item.locator("video")
    player.evaluate(
        "v => new Promise(r => v.readyState >= 2 ? r() : v.addEventListener('loadeddata', r))"
    )
    assert player.evaluate("v => [v.videoWidth, v.videoHeight]") == [640, 360]
    tab.shot(artifacts_dir, "review")

    item.get_by_role("button", name="Approve").click()
    expect(item).to_have_count(0)
    expect(page.locator("#review-empty")).to_be_visible()
    done = server.api("GET", f"/v1/videos/{video['id']}").json()
    assert done["status"] == "completed", done
    assert done["review"]["state"] == "approved"
