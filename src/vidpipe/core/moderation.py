"""Moderation of prompts on the request path, before anything is created or spent.

Two checks, each optional: a configurable blocklist (categories of words or regular
expressions), and an OpenAI-compatible moderation API (``POST {url}`` with
``{"input": text}`` answering ``{"results": [{"flagged", "categories": {…}}]}``).
A flagged request gets 422 ``content_policy`` naming the category.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx

from vidpipe.errors import InvalidRequest, VidpipeError


class ContentPolicy(InvalidRequest):
    code = "content_policy"

    def __init__(self, category: str, reason: str) -> None:
        super().__init__(reason, param="prompt")
        self.category = category


class ModerationUnavailable(VidpipeError):
    code = "moderation_unavailable"
    http_status = 503


@dataclass(frozen=True)
class Blocklist:
    patterns: Mapping[str, Sequence[re.Pattern[str]]]

    @classmethod
    def from_settings(cls, categories: Mapping[str, Sequence[str]]) -> Blocklist:
        compiled = {
            category: [re.compile(rf"(?<!\w){term}(?!\w)", re.IGNORECASE) for term in terms if term]
            for category, terms in categories.items()
        }
        return cls(compiled)

    def check(self, text: str) -> None:
        for category, patterns in self.patterns.items():
            for pattern in patterns:
                if pattern.search(text):
                    raise ContentPolicy(
                        category, f"the prompt was refused by the content policy ({category})"
                    )


class Moderator:
    def __init__(
        self,
        blocklist: Blocklist,
        *,
        http: httpx.AsyncClient | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
        fail_closed: bool = True,
    ) -> None:
        self.blocklist = blocklist
        self.http = http
        self.api_url = api_url
        self.api_key = api_key
        self.fail_closed = fail_closed

    async def check(self, texts: Sequence[str]) -> None:
        """Raise ContentPolicy for a flagged text; ModerationUnavailable (503) when the
        API cannot answer and the policy is to fail closed."""
        joined = "\n".join(t for t in texts if t)
        if not joined:
            return
        self.blocklist.check(joined)
        if self.api_url is None or self.http is None:
            return
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            response = await self.http.post(
                self.api_url, json={"input": joined}, headers=headers, timeout=10.0
            )
            response.raise_for_status()
            result = response.json()["results"][0]
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            if self.fail_closed:
                raise ModerationUnavailable(
                    "the moderation service did not answer; try again later"
                ) from exc
            return
        if result.get("flagged"):
            flagged = [name for name, on in (result.get("categories") or {}).items() if on]
            category = flagged[0] if flagged else "flagged"
            raise ContentPolicy(
                category, f"the prompt was refused by the content policy ({category})"
            )
