"""The web UI, served by vidpipe itself under ``/ui/``: no separate server, no build step.

Pages are server-rendered shells (Jinja2, autoescaped) whose plain JavaScript reads the
same public API as every other client, with the key the user pasted, and follows the
backend live over Server-Sent Events. ``router`` holds every route of the UI.
"""

from __future__ import annotations

from fastapi import APIRouter

from vidpipe.web import data, media, pages

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
router.include_router(pages.router)
router.include_router(data.router)
router.include_router(media.router)
