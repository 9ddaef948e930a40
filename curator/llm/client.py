"""The OpenAI-compatible chat client: retries, backoff, timeouts, caps and token accounting.

Built on the openai SDK's async client with the SDK's own retries switched off, so
every attempt is counted, the backoff base is configurable (tests use milliseconds)
and ``Retry-After`` is honoured on 429 and 5xx alike. Works with any server that
speaks chat completions: OpenAI, vLLM, Ollama, llama.cpp's server.

Every request takes a slot from :class:`curator.llm.pace.Pace` first, which keeps as
many in flight as the endpoint sustains; the request's timeout starts when it leaves,
never while it waits for a slot. Structured output: ``response_format = "auto"`` sends
the caption list's JSON schema (OpenAI, vLLM, llama.cpp enforce it) and, where the
endpoint refuses it with a 400, falls back to ``json_object`` and then to none for
the rest of the run.

Errors split in two. A request that keeps failing (429/5xx/timeouts past the retry
budget) or that hits a cap raises :class:`RequestFailed`: that triplet is recorded
as failed and the run goes on. A mistake no retry can fix (bad key, unknown model,
endpoint unreachable, request rejected) raises :class:`LLMError`, a CuratorError
that stops the stage with one line; answers already received stay cached.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import openai

from curator.config import CaptionSettings
from curator.errors import CuratorError
from curator.llm.pace import Pace
from curator.llm.reply import response_format

log = logging.getLogger(__name__)
MODEL_ENV = "CURATOR_LLM_MODEL"
BASE_URL_ENV = "OPENAI_BASE_URL"
RETRY_STATUS = {408, 409, 429}  # and every 5xx
OVERLOAD_STATUS = {429, 503}  # the endpoint says it has too much to do: slow down
# A 400 naming one of these refused the structured-output request, not the request itself.
FORMAT_WORDS = ("response_format", "json_schema", "schema", "grammar", "structured", "json_object")
FORMAT_FALLBACK = {"json_schema": "json_object", "json_object": "none"}


class LLMError(CuratorError):
    """The endpoint cannot serve this run (authentication, model, reachability, request shape)."""


class RequestFailed(Exception):
    """One request failed for good; ``reason`` is the code recorded on the caption rows."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class Endpoint:
    """Where to send requests. The key is held here only and never written anywhere."""

    base_url: str
    model: str | None
    api_key: str = field(repr=False)
    verified: bool = False  # the model was found in the endpoint's model list

    @property
    def host(self) -> str:
        """The endpoint without credentials, path or query: safe for logs and summaries."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


def resolve_endpoint(settings: CaptionSettings) -> Endpoint | None:
    """The configured endpoint (recipe first, then $OPENAI_BASE_URL), or None for the offline generator."""
    if settings.generator == "template":
        return None
    base_url = settings.base_url or os.environ.get(BASE_URL_ENV)
    if not base_url:
        if settings.generator == "llm":
            raise LLMError(f"caption.generator is 'llm' but no endpoint is set: set {BASE_URL_ENV} or caption.base_url")
        return None
    # Local servers (vLLM, Ollama, llama.cpp) accept any key; the SDK insists on one.
    key = os.environ.get(settings.api_key_env) or "not-needed"
    model = settings.model or os.environ.get(MODEL_ENV) or None
    return Endpoint(base_url, model, key)


@dataclass
class Usage:
    requests: int = 0
    retries: int = 0
    failed: int = 0
    format_fallbacks: int = 0  # requests refused for their response_format and sent again without it
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def cost(self, settings: CaptionSettings) -> float | None:
        if settings.price_input_per_million is None and settings.price_output_per_million is None:
            return None
        return (
            self.prompt_tokens * (settings.price_input_per_million or 0)
            + self.completion_tokens * (settings.price_output_per_million or 0)
        ) / 1e6


@dataclass
class Completion:
    content: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    refusal: str | None = None


def _retry_after(response) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), if given."""
    if response is None:
        return None
    headers = response.headers
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class ChatClient:
    """Sends chat completions with bounded retries; counts every request and token in ``usage``."""

    def __init__(self, endpoint: Endpoint, settings: CaptionSettings):
        self.endpoint = endpoint
        self.settings = settings
        self.usage = Usage()
        self._capped: str | None = None
        self.format = "json_schema" if settings.response_format == "auto" else settings.response_format
        self.pace = Pace(
            settings.concurrency, settings.timeout, settings.concurrency_start, adaptive=settings.pace == "adaptive"
        )
        self._client = openai.AsyncOpenAI(
            base_url=endpoint.base_url, api_key=endpoint.api_key, max_retries=0, timeout=settings.timeout
        )

    async def close(self) -> None:
        self.pace.close()
        await self._client.close()

    async def resolve_model(self) -> str:
        """The configured model, else the endpoint's only model (vLLM and llama.cpp serve one)."""
        if self.endpoint.model:
            return self.endpoint.model
        try:
            models = sorted([m.id async for m in self._client.models.list()])
        except openai.APIError as exc:
            raise LLMError(f"no model configured and {self.endpoint.host} does not list its models: {exc}") from None
        if len(models) != 1:
            raise LLMError(
                f"no model configured (caption.model or ${MODEL_ENV}) and {self.endpoint.host} serves "
                f"{len(models)}: {', '.join(models[:10]) or 'none'}"
            )
        self.endpoint.model = models[0]
        self.endpoint.verified = True
        return models[0]

    async def check_model(self) -> None:
        """Stop with one line before any chat request when the endpoint lists models and not this one.

        Endpoints without a model list (some proxies) are let through: their first request tells.
        Ollama lists ``name:latest`` for a model asked for as ``name``."""
        if self.endpoint.verified:
            return
        model = self.endpoint.model
        try:
            models = sorted([m.id async for m in self._client.models.list()])
        except openai.APIConnectionError as exc:
            raise LLMError(f"cannot reach the LLM endpoint {self.endpoint.host}: {exc}") from None
        except openai.APIStatusError as exc:
            if exc.status_code in (401, 403):
                raise LLMError(_status_message(self.endpoint, exc.status_code, exc)) from None
            log.debug("%s lists no models (HTTP %s): not checked", self.endpoint.host, exc.status_code)
            return
        except openai.APIError as exc:
            log.debug("%s model list unreadable (%s): not checked", self.endpoint.host, exc)
            return
        if model not in models and f"{model}:latest" not in models:
            raise LLMError(
                f"LLM endpoint {self.endpoint.host} does not know model '{model}': it serves "
                f"{', '.join(models[:10]) or 'none'} (set caption.model or ${MODEL_ENV})"
            )
        self.endpoint.verified = True

    def _check_caps(self) -> None:
        # Checked before each request: requests already in flight (up to ``concurrency``) may
        # carry the token count a little past its cap, never the request count.
        s = self.settings
        if s.max_requests is not None and self.usage.requests >= s.max_requests:
            self._capped = f"cap_reached:requests ({s.max_requests})"
        elif s.max_total_tokens is not None and self.usage.total_tokens >= s.max_total_tokens:
            self._capped = f"cap_reached:tokens ({s.max_total_tokens})"
        if self._capped:
            raise RequestFailed(self._capped.split(" ")[0], f"{self._capped} reached: no more requests in this run")

    def _request(self, messages: list[dict], max_tokens: int, asked: int, fmt: str, schema: dict | None) -> dict:
        kwargs = {
            "model": self.endpoint.model,
            "messages": messages,
            "temperature": self.settings.temperature,
            "max_tokens": max_tokens,
        }
        if schema is not None:  # another reply than the caption list (curator.llm.structured)
            rf = schema if fmt == "json_schema" else {"type": "json_object"} if fmt == "json_object" else None
        else:
            rf = response_format(fmt, asked)
        if rf is not None:
            kwargs["response_format"] = rf
        return kwargs

    def _format_refused(self, exc: openai.APIStatusError, fmt: str) -> bool:
        """A 400 that refuses the response_format: step down to the next format (once per format)."""
        if exc.status_code != 400 or fmt == "none":
            return False
        text = f"{getattr(exc, 'message', '')} {getattr(exc, 'body', '')}".lower()
        if not any(w in text for w in FORMAT_WORDS):
            return False
        if self.format == fmt:  # another request may have stepped down already
            self.format = FORMAT_FALLBACK[fmt]
            log.warning(
                "%s refused response_format %s (HTTP 400); using %s for the rest of this run",
                self.endpoint.host,
                fmt,
                self.format,
            )
        self.usage.format_fallbacks += 1
        return True

    async def complete(
        self, messages: list[dict], max_tokens: int, asked: int = 1, schema: dict | None = None
    ) -> Completion:
        """One chat completion for ``asked`` captions, retried within the budget.

        ``schema``: the ``json_schema`` response_format of another reply than the caption
        list; ``asked`` then only names the request's size class for the pace."""
        s = self.settings
        last = "unknown"
        attempt = 0
        while True:
            ticket = await self.pace.slot()
            outcome, wait = "error", None
            try:
                self._check_caps()
                self.usage.requests += 1
                if attempt:
                    self.usage.retries += 1
                fmt = self.format
                resp = await self._client.chat.completions.create(
                    **self._request(messages, max_tokens, asked, fmt, schema)
                )
            except openai.APITimeoutError:
                last, outcome = "timeout", "timeout"
            except openai.APIConnectionError as exc:
                last = "connection"
                if attempt == s.max_retries:
                    raise LLMError(f"cannot reach the LLM endpoint {self.endpoint.host}: {exc}") from None
            except openai.APIStatusError as exc:
                status = exc.status_code
                if self._format_refused(exc, fmt):
                    continue  # not an attempt: the same request, in a format the endpoint takes
                if status not in RETRY_STATUS and status < 500:
                    raise LLMError(_status_message(self.endpoint, status, exc)) from None
                last, wait = str(status), _retry_after(exc.response)
                outcome = "overloaded" if status in OVERLOAD_STATUS or status >= 500 else "error"
            else:
                completion = _completion(resp)
                outcome = "ok"
                return completion
            finally:
                self.pace.done(ticket, outcome, asked, retry_after=min(s.backoff_max, wait) if wait else None)
            if attempt == s.max_retries:
                break
            delay = min(s.backoff_max, wait if wait is not None else s.backoff_base * 2**attempt)
            log.debug("request failed (%s); retry %d in %.2fs", last, attempt + 1, delay)
            await asyncio.sleep(delay)
            attempt += 1
        self.usage.failed += 1
        raise RequestFailed(f"request_failed:{last}", f"gave up after {s.max_retries + 1} attempts (last: {last})")


async def run_all(coroutines: Iterable[Coroutine]) -> None:
    """Run every request coroutine concurrently (the client's pace bounds what is in flight).

    A :class:`CuratorError` in any of them (a user's mistake: bad key, unknown model) is
    raised as itself, not wrapped in an exception group; anything else propagates as is.
    """
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in coroutines:
                group.create_task(coroutine)
    except BaseExceptionGroup as exc:
        fatal = [e for e in exc.exceptions if isinstance(e, CuratorError)]
        if fatal:
            raise fatal[0] from None
        raise


def _completion(resp) -> Completion:
    choice = resp.choices[0] if resp.choices else None
    usage = resp.usage
    return Completion(
        content=(choice.message.content or "") if choice and choice.message else "",
        finish_reason=choice.finish_reason if choice else None,
        prompt_tokens=(usage.prompt_tokens or 0) if usage else 0,
        completion_tokens=(usage.completion_tokens or 0) if usage else 0,
        refusal=getattr(choice.message, "refusal", None) if choice and choice.message else None,
    )


def _status_message(endpoint: Endpoint, status: int, exc: openai.APIStatusError) -> str:
    what = {
        400: "rejected the request",
        401: "rejected the API key",
        403: "refused access",
        404: f"does not know model '{endpoint.model}' (or the path)",
    }.get(status, "refused the request")
    detail = (str(getattr(exc, "message", "") or "").splitlines() or [""])[0][:200]
    if endpoint.api_key and len(endpoint.api_key) > 3:
        detail = detail.replace(endpoint.api_key, "***")  # some servers echo the key they refused
    return f"LLM endpoint {endpoint.host} {what} (HTTP {status}): {detail}"
