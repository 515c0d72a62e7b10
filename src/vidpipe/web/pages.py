"""The UI's HTML pages and its static files, all from this package.

Pages carry no tenant data: the browser holds the API key (``sessionStorage``), so the
page's script fetches what it shows from the API with it. What the server renders is
the shell, the auth mode and, on the job page, the id from the path (autoescaped).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from vidpipe import __version__
from vidpipe.api.auth import Authenticator
from vidpipe.errors import NotFound

router = APIRouter()

_HERE = Path(__file__).resolve().parent
_STATIC_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\.(?:js|css|svg)")
_STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

# Everything a page loads comes from this origin; no inline script or style can run,
# so even a prompt that slipped past escaping could not execute.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "media-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@functools.cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _page(
    request: Request, template: str, *, title: str, nav: str, **context: object
) -> HTMLResponse:
    auth: Authenticator = request.app.state.auth
    html = (
        _templates()
        .get_template(template)
        .render(
            title=title,
            nav=nav,
            auth_mode="open" if auth.open_tenant_id is not None else "key",
            version=__version__,
            **context,
        )
    )
    return HTMLResponse(html, headers=SECURITY_HEADERS)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui")
async def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/")
async def videos_page(request: Request) -> HTMLResponse:
    return _page(request, "videos.html", title="Videos", nav="videos")


@router.get("/ui/videos/{video_id}")
async def video_page(video_id: str, request: Request) -> HTMLResponse:
    return _page(request, "video.html", title="Video", nav="videos", video_id=video_id)


@router.get("/ui/review")
async def review_page(request: Request) -> HTMLResponse:
    return _page(request, "review.html", title="Review", nav="review")


@router.get("/ui/costs")
async def costs_page(request: Request) -> HTMLResponse:
    return _page(request, "costs.html", title="Costs", nav="costs")


@router.get("/ui/keys")
async def keys_page(request: Request) -> HTMLResponse:
    return _page(request, "keys.html", title="API keys", nav="keys")


@router.get("/ui/login")
async def login_page(request: Request) -> HTMLResponse:
    return _page(request, "login.html", title="Sign in", nav="")


@router.get("/ui/static/{name}")
async def static_file(name: str) -> FileResponse:
    """A file of ``static/``; names are a flat allow-listed shape, so no path escapes."""
    path = _HERE / "static" / name
    if not _STATIC_NAME.fullmatch(name) or not path.is_file():
        raise NotFound(f"no static file {name!r}", code="not_found")
    return FileResponse(
        path,
        media_type=_STATIC_TYPES[path.suffix],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
