"""`pixverse`: relay `pixverse-v6` to the PixVerse Platform API (OpenAPI v2, model `v6`).

Facts and sources: research/upstream-apis.md §2 (API), §4.2 (field mapping), §5.2 (statuses).

- Every call carries `API-KEY` and an `Ai-trace-id`. PixVerse answers a reused trace id with the
  earlier answer instead of doing the work again, so each logical call gets a fresh UUID, reused
  only when that same call is retried after an answer that was lost (timeout, garbled body).
  The generate call's trace id is committed with the `submitting` checkpoint before the call: a
  retry, a later tick or `recover` after a crash re-issues it and gets the earlier job back.
- Images are checked by vidgate (`ctx.load_images`), re-encoded as JPEG q95 (at most 4000 px a
  side, PixVerse's limit) and uploaded for an `img_id`; the ids are kept in `upstream_state` so a
  retry does not upload again.
- Fusion: PixVerse needs every reference named in the prompt as `@imageN` followed by a space.
  Mentions the prompt lacks are put in front of it (`@image2 @image3 ` + prompt), so a client may
  write a plain prompt; the longer prompt still has to fit PixVerse's 2048 characters.
- PixVerse's prompt limit is 2048 characters (vidgate accepts 5000, like apimart); a longer prompt
  comes back as ErrCode 400018 and fails the task as `upstream_rejected`, saying so.
- No cancel endpoint is known upstream: a cancelled task's job runs to its end at PixVerse.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from typing import Any, ClassVar

import httpx
from PIL import Image

from vidgate.catalog.pixverse import PixverseV6
from vidgate.config import Settings
from vidgate.errors import TaskFailure
from vidgate.providers import TaskContext
from vidgate.providers._relay import (
    RelayProvider,
    UpstreamBusy,
    UpstreamJob,
    UpstreamUnavailable,
    backoff,
    retry_after_of,
)
from vidgate.status import Phase

#: ErrCode for "not enough credits". A GUESS: PixVerse's error table (§2.7) does not list it; the
#: fake uses the same default (`insufficient_credits_errcode`). Change it here once it is known.
INSUFFICIENT_CREDITS_ERRCODE = 500090
BUSY = 500044  # concurrent generation limit reached: come back later
NOT_FOUND = 500008
REJECTED = frozenset({400011, 400013, 400017, 400018, 400019, 400032, 500042})
INVALID_IMAGE = frozenset({500030, 500031, 500032, 500033})
MODERATED = frozenset({500054, 500063})
AUTH = frozenset({400012, 500020})
QUOTA = frozenset({INSUFFICIENT_CREDITS_ERRCODE, 500060})
TRANSIENT = frozenset({500041})  # "image upload failed"

PROMPT_LIMIT = 2048
#: Consecutive "not found" answers to a poll before the job counts as gone (a single one right
#: after the submit may be replication lag).
NOT_FOUND_LIMIT = 3
#: Tries of one call inside a tick before the worker's own backoff takes over.
ATTEMPTS = 3
MAX_SIDE = 4000
#: Final statuses other than success (1) and moderation (7).
FAILED = {8: "generation failed, status 8", 6: "the video was deleted upstream, status 6"}
#: Errors raised before the request left this host: it cannot have had any effect.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)

#: `upstream_state` keys this provider writes (tests that stage a crash use them too).
TRACE_KEY = "trace_id"
IMAGES_KEY = "img_ids"

ENDPOINTS = {
    "text": "/video/text/generate",
    "image": "/video/img/generate",
    "transition": "/video/transition/generate",
    "fusion": "/video/fusion/generate",
    "extend": "/video/extend/generate",
}


class _Transient(Exception):
    """No usable answer. `sent`: the call may have taken effect; `busy`: the upstream said 429."""

    def __init__(
        self, detail: str, *, sent: bool, busy: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.sent = sent
        self.busy = busy
        self.retry_after = retry_after


def new_trace() -> str:
    return str(uuid.uuid4())


def with_mentions(prompt: str, count: int) -> str:
    """The prompt with `@image1 `..`@image{count} ` each present, missing ones put in front."""
    missing = [f"@image{n}" for n in range(1, count + 1) if f"@image{n} " not in prompt]
    return " ".join([*missing, prompt]) if missing else prompt


def generate_call(request: PixverseV6, img_ids: list[int], source_video_id: int | None) -> tuple[str, Any]:
    """(path, JSON body) of the generate call for the request's mode."""
    mode = request.mode
    body: dict[str, Any] = {
        "model": "v6",
        "prompt": request.prompt,
        "duration": request.duration,
        "quality": request.resolution,
        "generate_audio_switch": request.audio,
    }
    if request.seed is not None:
        body["seed"] = request.seed
    if request.negative_prompt:
        body["negative_prompt"] = request.negative_prompt
    if request.watermark:
        body["water_mark"] = True  # only sent when asked: v6 support is unconfirmed (§2.5)
    if mode in ("text", "image"):
        body["generate_multi_clip_switch"] = request.generate_multi_clip_switch
    if mode in ("text", "fusion"):
        body["aspect_ratio"] = request.size
    if mode == "image":
        body["img_id"] = img_ids[0]
    elif mode == "transition":
        body["first_frame_img"], body["last_frame_img"] = img_ids[0], img_ids[1]
    elif mode == "fusion":
        body["prompt"] = with_mentions(request.prompt, len(img_ids))
        body["image_references"] = [
            {"type": "subject", "img_id": img_id, "ref_name": f"image{n}"}
            for n, img_id in enumerate(img_ids, start=1)
        ]
    elif mode == "extend":
        body["source_video_id"] = source_video_id
    return ENDPOINTS[mode], body


def _jpeg(image: Image.Image) -> bytes:
    if max(image.size) > MAX_SIDE:
        image = image.copy()
        image.thumbnail((MAX_SIDE, MAX_SIDE))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _envelope(response: httpx.Response) -> dict[str, Any] | None:
    """`{ErrCode, ErrMsg, Resp}` if the body is one, whatever the HTTP status."""
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and type(body.get("ErrCode")) is int:
        return body
    return None


def _id_of(resp: Any, key: str) -> int | None:
    value = resp.get(key) if isinstance(resp, dict) else None
    if type(value) is int or (isinstance(value, str) and value.isdigit()):
        return int(value)
    return None


class PixverseProvider(RelayProvider, name="pixverse"):
    models: ClassVar[frozenset[str]] = frozenset({"pixverse-v6"})
    preference: ClassVar[int] = 10
    label: ClassVar[str] = "PixVerse"

    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        return bool(settings.pixverse_api_key)

    def in_flight_cap(self) -> int:
        return self.settings.pixverse_max_in_flight

    # --- submit ------------------------------------------------------------------------------------

    async def submit(self, ctx: TaskContext) -> str:
        state = dict(ctx.upstream_state or {})
        # A trace id kept from an earlier tick belongs to a call whose answer was lost: it may
        # have created the job, so this task must not move to another provider any more.
        inherited = bool(state.get(TRACE_KEY))
        try:
            request = ctx.request
            if not isinstance(request, PixverseV6):
                raise TypeError(f"pixverse cannot serve {request.model}")
            img_ids = await self._upload_images(ctx, state)
            source_id = await self._source_video_id(ctx, request)
            path, body = generate_call(request, img_ids, source_id)
            state[TRACE_KEY] = state.get(TRACE_KEY) or new_trace()
            await self._save(ctx, Phase.SUBMITTING, state)
            return await self._generate(ctx, state, path, body, sent=inherited)
        except UpstreamUnavailable as exc:
            if inherited:
                raise UpstreamBusy(exc.detail) from exc
            raise

    async def recover(self, ctx: TaskContext) -> str | None:
        """Found in `submitting`: re-issue the generate call with the stored trace id. PixVerse
        answers with the job the lost call created, or creates it now if that call never arrived;
        either way there is exactly one job. No trace id stored means no call was made."""
        if not (ctx.upstream_state or {}).get(TRACE_KEY):
            return None
        return await self.submit(ctx)

    async def _generate(
        self, ctx: TaskContext, state: dict[str, Any], path: str, body: Any, *, sent: bool
    ) -> str:
        trace = str(state[TRACE_KEY])
        try:
            envelope = await self._call("POST", path, want="video_id", trace=trace, sent=sent, json=body)
        except _Transient as exc:
            if exc.busy or exc.sent:
                # Keep the trace id: the next try replays whatever the lost call did.
                raise UpstreamBusy(exc.detail, exc.retry_after) from exc
            raise UpstreamUnavailable(exc.detail) from exc
        code = envelope["ErrCode"]
        if code == 0:
            return str(_id_of(envelope["Resp"], "video_id"))
        # A definite refusal created nothing, and a reused trace id could replay the refusal: the
        # next try gets a new one (the base writes `ctx.upstream_state` back on a busy snooze).
        state.pop(TRACE_KEY, None)
        ctx.upstream_state = dict(state)
        if code == NOT_FOUND and "source_video_id" in body:
            raise TaskFailure("extend_source_unavailable", param="extend_from_task_id")
        raise self._refusal(code, str(envelope.get("ErrMsg", "")), prompt=str(body.get("prompt", "")))

    async def _upload_images(self, ctx: TaskContext, state: dict[str, Any]) -> list[int]:
        request = ctx.request
        params = [param for param, _url in request.image_inputs()]
        img_ids: list[int] = list(state.get(IMAGES_KEY) or [])
        if len(img_ids) >= len(params):
            return img_ids[: len(params)]
        images = await ctx.load_images()
        by_image: dict[int, int] = {}  # identical URLs share one image object: upload it once
        for index, image in enumerate(images):
            if index < len(img_ids):
                by_image.setdefault(id(image), img_ids[index])
                continue
            img_id = by_image.get(id(image))
            if img_id is None:
                img_id = by_image[id(image)] = await self._upload(image, params[index])
            img_ids.append(img_id)
            state[IMAGES_KEY] = list(img_ids)
            ctx.upstream_state = dict(state)  # a busy retry resumes here (see `_save`)
        return img_ids

    async def _upload(self, image: Image.Image, param: str) -> int:
        data = await asyncio.to_thread(_jpeg, image)
        files = {"image": ("image.jpg", data, "image/jpeg")}
        try:
            envelope = await self._call("POST", "/image/upload", want="img_id", files=files)
        except _Transient as exc:
            if exc.busy:
                raise UpstreamBusy(exc.detail, exc.retry_after) from exc
            raise UpstreamUnavailable(exc.detail) from exc
        code = envelope["ErrCode"]
        if code != 0:
            raise self._refusal(code, str(envelope.get("ErrMsg", "")), param=param)
        return int(_id_of(envelope["Resp"], "img_id") or 0)

    async def _source_video_id(self, ctx: TaskContext, request: PixverseV6) -> int | None:
        if request.extend_from_task_id is None:
            return None
        _path, result = await ctx.source_video(request.extend_from_task_id)
        upstream_id = str(result.get("upstream_id") or "")
        if not upstream_id.isdigit():
            raise TaskFailure("extend_source_unavailable", param="extend_from_task_id")
        return int(upstream_id)

    async def _save(self, ctx: TaskContext, phase: Phase, state: dict[str, Any]) -> None:
        """Commit `state` and mirror it in `ctx.upstream_state`: the relay base writes
        `ctx.upstream_state` back when it snoozes a busy task, and must not restore a stale one."""
        ctx.upstream_state = dict(state)
        await ctx.checkpoint(phase, upstream_state=dict(state))

    def _refusal(self, code: int, message: str, *, param: str | None = None, prompt: str = "") -> Exception:
        """What a non-zero ErrCode to an upload or generate call means for the task."""
        where = {"param": param} if param else {}
        detail = f"{message or 'error'} (ErrCode {code})"
        if code == BUSY:
            return UpstreamBusy(detail)
        if code in TRANSIENT:
            return UpstreamUnavailable(detail)
        if code in MODERATED:
            return TaskFailure("content_policy_violation", upstream=self.label, detail=detail, **where)
        if code in INVALID_IMAGE:
            return TaskFailure("invalid_image", upstream=self.label, detail=detail, **where)
        if code in AUTH:
            return TaskFailure("upstream_auth_failed", type="bad_gateway", upstream=self.label, detail=detail)
        if code in QUOTA:
            return TaskFailure(
                "upstream_quota_exceeded", type="bad_gateway", upstream=self.label, detail=detail
            )
        if code == 400018:
            detail = (
                f"the prompt has {len(prompt)} characters; PixVerse accepts at most {PROMPT_LIMIT} "
                f"(ErrCode {code})"
            )
            where = {"param": "prompt"}
        kind = "invalid_request_error" if code in REJECTED else "bad_gateway"
        return TaskFailure("upstream_rejected", type=kind, upstream=self.label, detail=detail, **where)

    # --- poll --------------------------------------------------------------------------------------

    async def poll(self, ctx: TaskContext, upstream_id: str) -> UpstreamJob:
        try:
            # A fresh trace id on every poll: a reused one would replay a stale status.
            envelope = await self._call("GET", f"/video/result/{upstream_id}", want="status", attempts=1)
        except _Transient as exc:
            if exc.busy:
                raise UpstreamBusy(exc.detail, exc.retry_after) from exc
            raise UpstreamUnavailable(exc.detail) from exc
        code = envelope["ErrCode"]
        if code == NOT_FOUND:
            # Counted in the raw state the base records, so only consecutive answers add up.
            last = str((ctx.upstream_state or {}).get("state", ""))
            seen = int(last.split(":")[1]) + 1 if last.startswith("not_found:") else 1
            if seen >= NOT_FOUND_LIMIT:
                failure = self._failed("the job is unknown at PixVerse (ErrCode 500008)")
                return UpstreamJob("failed", raw_state="not_found", failure=failure)
            return UpstreamJob("unknown", raw_state=f"not_found:{seen}")
        if code != 0:
            raise UpstreamUnavailable(f"{envelope.get('ErrMsg', '')} (ErrCode {code})")
        resp = envelope["Resp"]
        status = _id_of(resp, "status")
        raw = str(status)
        if status == 5:
            return UpstreamJob("running", raw_state=raw)
        if status == 1:
            return UpstreamJob("succeeded", raw_state=raw, video_url=str(resp.get("url") or "") or None)
        if status == 7:
            failure = TaskFailure(
                "content_policy_violation",
                upstream=self.label,
                detail="the video failed PixVerse's moderation (status 7); its credits are refunded",
            )
            return UpstreamJob("failed", raw_state=raw, failure=failure)
        if status in FAILED:
            return UpstreamJob("failed", raw_state=raw, failure=self._failed(FAILED[status]))
        return UpstreamJob("unknown", raw_state=raw)

    def _failed(self, detail: str) -> TaskFailure:
        return TaskFailure("upstream_failed", type="server_error", upstream=self.label, detail=detail)

    # --- HTTP --------------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        want: str,
        trace: str | None = None,
        sent: bool = False,
        attempts: int = ATTEMPTS,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The envelope of one logical call, retried on lost or transient answers with the same
        trace id (so a retry replays what an earlier try did). An envelope with ErrCode 0 always
        holds `Resp[want]`. Raises `_Transient` once the tries are used up."""
        trace = trace or new_trace()
        last = _Transient("no attempt", sent=False)
        for attempt in range(attempts):
            try:
                envelope = await self._send(method, path, trace, **kwargs)
                if envelope["ErrCode"] != 0 or _id_of(envelope.get("Resp"), want) is not None:
                    return envelope
                raise _Transient(f"answer without Resp.{want}", sent=True)
            except _Transient as exc:
                sent = sent or exc.sent
                last = exc
            if attempt + 1 == attempts or (last.retry_after or 0) > 2:
                break
            await asyncio.sleep(backoff(attempt, base=0.25, cap=2.0, retry_after=last.retry_after))
        last.sent = sent
        raise last

    async def _send(self, method: str, path: str, trace: str, **kwargs: Any) -> dict[str, Any]:
        headers = {"API-KEY": self.settings.pixverse_api_key, "Ai-trace-id": trace}
        url = f"{self.settings.pixverse_base_url}{path}"
        try:
            response = await self.client().request(method, url, headers=headers, **kwargs)
        except _NOT_SENT as exc:
            raise _Transient(f"cannot connect: {type(exc).__name__}", sent=False) from exc
        except httpx.HTTPError as exc:  # sent, but the answer was lost (timeout, broken connection)
            raise _Transient(f"no answer: {type(exc).__name__}", sent=True) from exc
        envelope = _envelope(response)
        if envelope is not None:
            return envelope
        status = response.status_code
        if status == 429:
            raise _Transient("HTTP 429", sent=False, busy=True, retry_after=retry_after_of(response))
        if status >= 500 or status in (401, 403):
            # A proxy's error page; a 504 means the request may still have reached PixVerse.
            raise _Transient(f"HTTP {status}", sent=status == 504)
        raise _Transient(f"HTTP {status}: the answer is not a PixVerse envelope", sent=True)
