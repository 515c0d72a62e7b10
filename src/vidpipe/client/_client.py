"""``Client`` (blocking, on ``httpx.Client``) and ``AsyncClient`` (on ``httpx.AsyncClient``).

Both share the wire shape, the answer parsing, the retry policy and the polling decisions
(``_wire``, ``_retry``); only sending and sleeping differ.
"""

from __future__ import annotations

import inspect
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, Unpack

import anyio
import httpx

from vidpipe import __version__
from vidpipe.client import _wire
from vidpipe.client._errors import APIConnectionError
from vidpipe.client._models import (
    Estimate,
    Step,
    StepList,
    Template,
    TemplateList,
    Variant,
    Video,
    VideoDeleted,
    VideoList,
    VideoStatus,
    VideoWithSteps,
)
from vidpipe.client._plan import Plan, job_body
from vidpipe.client._retry import RetryPolicy
from vidpipe.client._wire import ShortFields

Order = Literal["asc", "desc"]
ProgressCallback = Callable[[Video], object]
AsyncProgressCallback = Callable[[Video], Awaitable[object] | object]

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_WAIT_S = 600.0


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": f"vidpipe-client/{__version__}", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _part_path(target: Path) -> Path:
    # Written beside the target and renamed over it: a reader never sees half a file.
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")


class Client:
    """A blocking client of a vidpipe server.

    ``base_url`` is the server's root (a trailing ``/v1`` is accepted too). Requests that
    fail to connect, time out, or answer 429 or 5xx are retried up to ``max_retries``
    times with exponential backoff, honouring ``Retry-After``; every create carries an
    ``Idempotency-Key`` (generated unless given), so a retried create never makes two
    videos. ``transport`` replaces the network (e.g. ``httpx.MockTransport``).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
        max_retries: int = 2,
        retry_backoff_s: float = 0.5,
    ) -> None:
        self._http = httpx.Client(
            base_url=_wire.base_url(base_url),
            headers=_headers(api_key),
            timeout=timeout,
            transport=transport,
        )
        self._retry = RetryPolicy(max_retries=max_retries, backoff_s=retry_backoff_s)
        self.videos = Videos(self)

    def estimate(
        self,
        prompt: str,
        *,
        seconds: int | str | None = None,
        size: str | None = None,
        aspect_ratio: str | None = None,
        model: str | None = None,
        seed: int | None = None,
        metadata: Mapping[str, str] | None = None,
        fallback_models: Sequence[str] | None = None,
        max_cost_usd: float | None = None,
        webhook_url: str | None = None,
        derivatives: Sequence[str] | None = None,
    ) -> Estimate:
        """What creating this video would do and cost; creates and reserves nothing."""
        body = _wire.video_body(
            prompt,
            seconds=seconds,
            size=size,
            aspect_ratio=aspect_ratio,
            model=model,
            seed=seed,
            metadata=metadata,
            fallback_models=fallback_models,
            max_cost_usd=max_cost_usd,
            webhook_url=webhook_url,
            derivatives=derivatives,
        )
        return _wire.parse(self._send(_wire.estimate(body)), Estimate)

    def create_job(
        self, plan: Plan | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> VideoWithSteps:
        """Queue a multi-step plan (a :class:`Plan`, or the ``POST /v1/jobs`` body as a
        mapping); returns the video, ``queued``, with its steps.

        The whole plan is checked before anything runs: a bad one raises
        :class:`InvalidRequest` whose ``code`` says why (``plan_cycle``,
        ``dangling_reference``, ``invalid_step_params``, ...). Idempotent as
        :meth:`Videos.create`.
        """
        request = _wire.create_job(job_body(plan), idempotency_key)
        return _wire.parse(self._send(request), VideoWithSteps)

    def create_short(
        self, *, idempotency_key: str | None = None, **fields: Unpack[ShortFields]
    ) -> VideoWithSteps:
        """Queue a faceless short from a ``topic`` (or your ``script`` or ``scenes``), see
        :class:`ShortFields`; returns the video, ``queued``, with its per-scene steps.
        Idempotent as :meth:`Videos.create`."""
        request = _wire.create_short(_wire.short_body(fields), idempotency_key)
        return _wire.parse(self._send(request), VideoWithSteps)

    def retry(self, video_id: str) -> VideoWithSteps:
        """Run a failed video again from its failed steps (succeeded steps are reused).

        Raises :class:`Conflict` (``video_not_retryable``) unless the video failed.
        """
        return _wire.parse(self._send(_wire.retry(video_id)), VideoWithSteps)

    def steps(self, video_id: str) -> list[Step]:
        """The video's plan: each step's kind, state, progress, output and error."""
        return _wire.parse(self._send(_wire.steps(video_id)), StepList).data

    def templates(self) -> list[Template]:
        """The templates a short can use."""
        return _wire.parse(self._send(_wire.templates()), TemplateList).data

    def template(self, name: str) -> Template:
        """One template; :class:`NotFound` (``unknown_template``) if there is none."""
        return _wire.parse(self._send(_wire.template(name)), Template)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, request: _wire.Request, *, stream: bool = False) -> httpx.Response:
        """Send with retries; returns a successful response, else raises the typed error.

        With ``stream`` the body is not read yet: the caller must close the response.
        """
        retries = 0
        while True:
            try:
                response = self._http.send(_wire.build(self._http, request), stream=stream)
            except httpx.TransportError as exc:
                delay = self._retry.after_error(retries, exc, random.random())
                if delay is None:
                    raise APIConnectionError(f"{request.method} {request.path}: {exc!r}") from exc
            else:
                if response.is_success:
                    return response
                response.read()
                response.close()
                delay = self._retry.after_status(
                    retries, response.status_code, response.headers, time.time(), random.random()
                )
                if delay is None:
                    raise _wire.api_error(response)
            retries += 1
            time.sleep(delay)


class Videos:
    """``client.videos``: create, read, list, cancel, delete, wait for and download videos."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        prompt: str,
        *,
        seconds: int | str | None = None,
        size: str | None = None,
        aspect_ratio: str | None = None,
        model: str | None = None,
        seed: int | None = None,
        metadata: Mapping[str, str] | None = None,
        fallback_models: Sequence[str] | None = None,
        max_cost_usd: float | None = None,
        webhook_url: str | None = None,
        derivatives: Sequence[str] | None = None,
        idempotency_key: str | None = None,
    ) -> Video:
        """Queue a video and return it at once (``queued``).

        The same ``idempotency_key`` with the same body returns the same video; one is
        generated when none is given, and kept across this call's retries.
        """
        body = _wire.video_body(
            prompt,
            seconds=seconds,
            size=size,
            aspect_ratio=aspect_ratio,
            model=model,
            seed=seed,
            metadata=metadata,
            fallback_models=fallback_models,
            max_cost_usd=max_cost_usd,
            webhook_url=webhook_url,
            derivatives=derivatives,
        )
        return _wire.parse(self._client._send(_wire.create(body, idempotency_key)), Video)

    def get(self, video_id: str) -> Video:
        return _wire.parse(self._client._send(_wire.get(video_id)), Video)

    def list(
        self,
        *,
        limit: int | None = None,
        after: str | None = None,
        status: VideoStatus | None = None,
        order: Order | None = None,
    ) -> VideoList:
        """One page of the caller's videos, newest first unless ``order="asc"``."""
        request = _wire.list_videos(limit=limit, after=after, status=status, order=order)
        return _wire.parse(self._client._send(request), VideoList)

    def iter_all(
        self,
        *,
        status: VideoStatus | None = None,
        order: Order | None = None,
        page_size: int = 100,
    ) -> Iterator[Video]:
        """Every video, page after page (each page one request, made as you iterate)."""
        after: str | None = None
        while True:
            page = self.list(limit=page_size, after=after, status=status, order=order)
            yield from page.data
            if not page.has_more or not page.last_id:
                return
            after = page.last_id

    def cancel(self, video_id: str) -> Video:
        return _wire.parse(self._client._send(_wire.cancel(video_id)), Video)

    def delete(self, video_id: str) -> VideoDeleted:
        return _wire.parse(self._client._send(_wire.delete(video_id)), VideoDeleted)

    def wait(
        self,
        video_id: str,
        *,
        timeout_s: float = DEFAULT_WAIT_S,
        poll_interval_s: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Video:
        """Poll until the video completes and return it.

        Polls every ``poll_interval_s``, or as the server's ``openai-poll-after-ms`` says.
        ``on_progress(video)`` is called on the first poll and whenever the progress
        rose. Raises :class:`VideoFailed` if it failed, was canceled or expired, and
        :class:`WaitTimeout` after ``timeout_s``.
        """
        waiter = _wire.Waiter(timeout_s, poll_interval_s)
        while True:
            response = self._client._send(_wire.get(video_id))
            video = _wire.parse(response, Video)
            if on_progress is not None and waiter.progressed(video):
                on_progress(video)
            if video.status == "completed":
                return video
            time.sleep(waiter.next_delay(video, response.headers))

    def download(
        self, video_id: str, path: str | os.PathLike[str], *, variant: Variant = "video"
    ) -> Path:
        """Stream the video (or a derivative) into ``path``; returns the path.

        The file appears complete or not at all.
        """
        target = Path(path)
        part = _part_path(target)
        response = self._client._send(_wire.content(video_id, variant), stream=True)
        try:
            with part.open("wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
            part.replace(target)
        except httpx.TransportError as exc:
            raise APIConnectionError(f"download of {video_id} broke off: {exc!r}") from exc
        finally:
            response.close()
            part.unlink(missing_ok=True)
        return target


class AsyncClient:
    """The asyncio twin of :class:`Client` (same arguments, same behaviour)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retries: int = 2,
        retry_backoff_s: float = 0.5,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=_wire.base_url(base_url),
            headers=_headers(api_key),
            timeout=timeout,
            transport=transport,
        )
        self._retry = RetryPolicy(max_retries=max_retries, backoff_s=retry_backoff_s)
        self.videos = AsyncVideos(self)

    async def estimate(
        self,
        prompt: str,
        *,
        seconds: int | str | None = None,
        size: str | None = None,
        aspect_ratio: str | None = None,
        model: str | None = None,
        seed: int | None = None,
        metadata: Mapping[str, str] | None = None,
        fallback_models: Sequence[str] | None = None,
        max_cost_usd: float | None = None,
        webhook_url: str | None = None,
        derivatives: Sequence[str] | None = None,
    ) -> Estimate:
        """What creating this video would do and cost; creates and reserves nothing."""
        body = _wire.video_body(
            prompt,
            seconds=seconds,
            size=size,
            aspect_ratio=aspect_ratio,
            model=model,
            seed=seed,
            metadata=metadata,
            fallback_models=fallback_models,
            max_cost_usd=max_cost_usd,
            webhook_url=webhook_url,
            derivatives=derivatives,
        )
        return _wire.parse(await self._send(_wire.estimate(body)), Estimate)

    async def create_job(
        self, plan: Plan | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> VideoWithSteps:
        """Queue a multi-step plan (see :meth:`Client.create_job`)."""
        request = _wire.create_job(job_body(plan), idempotency_key)
        return _wire.parse(await self._send(request), VideoWithSteps)

    async def create_short(
        self, *, idempotency_key: str | None = None, **fields: Unpack[ShortFields]
    ) -> VideoWithSteps:
        """Queue a faceless short (see :meth:`Client.create_short`)."""
        request = _wire.create_short(_wire.short_body(fields), idempotency_key)
        return _wire.parse(await self._send(request), VideoWithSteps)

    async def retry(self, video_id: str) -> VideoWithSteps:
        """Run a failed video again from its failed steps (see :meth:`Client.retry`)."""
        return _wire.parse(await self._send(_wire.retry(video_id)), VideoWithSteps)

    async def steps(self, video_id: str) -> list[Step]:
        """The video's plan: each step's kind, state, progress, output and error."""
        return _wire.parse(await self._send(_wire.steps(video_id)), StepList).data

    async def templates(self) -> list[Template]:
        """The templates a short can use."""
        return _wire.parse(await self._send(_wire.templates()), TemplateList).data

    async def template(self, name: str) -> Template:
        """One template; :class:`NotFound` (``unknown_template``) if there is none."""
        return _wire.parse(await self._send(_wire.template(name)), Template)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(self, request: _wire.Request, *, stream: bool = False) -> httpx.Response:
        """Send with retries; returns a successful response, else raises the typed error.

        With ``stream`` the body is not read yet: the caller must close the response.
        """
        retries = 0
        while True:
            try:
                response = await self._http.send(_wire.build(self._http, request), stream=stream)
            except httpx.TransportError as exc:
                delay = self._retry.after_error(retries, exc, random.random())
                if delay is None:
                    raise APIConnectionError(f"{request.method} {request.path}: {exc!r}") from exc
            else:
                if response.is_success:
                    return response
                await response.aread()
                await response.aclose()
                delay = self._retry.after_status(
                    retries, response.status_code, response.headers, time.time(), random.random()
                )
                if delay is None:
                    raise _wire.api_error(response)
            retries += 1
            await anyio.sleep(delay)


class AsyncVideos:
    """``client.videos`` of :class:`AsyncClient`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        prompt: str,
        *,
        seconds: int | str | None = None,
        size: str | None = None,
        aspect_ratio: str | None = None,
        model: str | None = None,
        seed: int | None = None,
        metadata: Mapping[str, str] | None = None,
        fallback_models: Sequence[str] | None = None,
        max_cost_usd: float | None = None,
        webhook_url: str | None = None,
        derivatives: Sequence[str] | None = None,
        idempotency_key: str | None = None,
    ) -> Video:
        """Queue a video and return it at once (see :meth:`Videos.create`)."""
        body = _wire.video_body(
            prompt,
            seconds=seconds,
            size=size,
            aspect_ratio=aspect_ratio,
            model=model,
            seed=seed,
            metadata=metadata,
            fallback_models=fallback_models,
            max_cost_usd=max_cost_usd,
            webhook_url=webhook_url,
            derivatives=derivatives,
        )
        return _wire.parse(await self._client._send(_wire.create(body, idempotency_key)), Video)

    async def get(self, video_id: str) -> Video:
        return _wire.parse(await self._client._send(_wire.get(video_id)), Video)

    async def list(
        self,
        *,
        limit: int | None = None,
        after: str | None = None,
        status: VideoStatus | None = None,
        order: Order | None = None,
    ) -> VideoList:
        """One page of the caller's videos, newest first unless ``order="asc"``."""
        request = _wire.list_videos(limit=limit, after=after, status=status, order=order)
        return _wire.parse(await self._client._send(request), VideoList)

    async def iter_all(
        self,
        *,
        status: VideoStatus | None = None,
        order: Order | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[Video]:
        """Every video, page after page (each page one request, made as you iterate)."""
        after: str | None = None
        while True:
            page = await self.list(limit=page_size, after=after, status=status, order=order)
            for video in page.data:
                yield video
            if not page.has_more or not page.last_id:
                return
            after = page.last_id

    async def cancel(self, video_id: str) -> Video:
        return _wire.parse(await self._client._send(_wire.cancel(video_id)), Video)

    async def delete(self, video_id: str) -> VideoDeleted:
        return _wire.parse(await self._client._send(_wire.delete(video_id)), VideoDeleted)

    async def wait(
        self,
        video_id: str,
        *,
        timeout_s: float = DEFAULT_WAIT_S,
        poll_interval_s: float | None = None,
        on_progress: AsyncProgressCallback | None = None,
    ) -> Video:
        """Poll until the video completes (see :meth:`Videos.wait`); ``on_progress`` may
        be a plain function or a coroutine function."""
        waiter = _wire.Waiter(timeout_s, poll_interval_s)
        while True:
            response = await self._client._send(_wire.get(video_id))
            video = _wire.parse(response, Video)
            if on_progress is not None and waiter.progressed(video):
                result = on_progress(video)
                if inspect.isawaitable(result):
                    await result
            if video.status == "completed":
                return video
            await anyio.sleep(waiter.next_delay(video, response.headers))

    async def download(
        self, video_id: str, path: str | os.PathLike[str], *, variant: Variant = "video"
    ) -> Path:
        """Stream the video (or a derivative) into ``path``; returns the path.

        The file appears complete or not at all.
        """
        target = Path(path)
        part = anyio.Path(_part_path(target))
        response = await self._client._send(_wire.content(video_id, variant), stream=True)
        try:
            async with await anyio.open_file(part, "wb") as handle:
                async for chunk in response.aiter_bytes():
                    await handle.write(chunk)
            await part.replace(target)
        except httpx.TransportError as exc:
            raise APIConnectionError(f"download of {video_id} broke off: {exc!r}") from exc
        finally:
            await response.aclose()
            await part.unlink(missing_ok=True)
        return target
