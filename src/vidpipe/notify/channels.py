"""Alert channels and how each wants its message shaped."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class AlertChannel(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}

    kind: Literal["slack", "discord", "webhook"]
    url: str


def shape(channel: AlertChannel, title: str, text: str, data: dict[str, Any]) -> dict[str, Any]:
    """The JSON body ``channel`` expects for an alert."""
    if channel.kind == "slack":
        return {"text": f"*{title}*\n{text}"}
    if channel.kind == "discord":
        # Discord refuses content over 2000 characters.
        return {"content": f"**{title}**\n{text}"[:2000]}
    return {"type": "vidpipe.alert", "title": title, "text": text, "data": data}
