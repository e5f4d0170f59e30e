"""The fake PixVerse's state: uploaded images, generation jobs, the trace-id replay cache, result
views and webhooks.

A job reports status 5 until its virtual `done_at`, then its final status (1 success, 7 moderation,
8 failed, 6 deleted). Jobs in status 5 count against `concurrency`; PixVerse has no queue, so a
submit over the limit is refused with ErrCode 500044 (§0.8). Completion is an event on a heap.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import secrets
from collections import OrderedDict
from typing import Any

from starlette.responses import Response

from vidgate.testing.fake_clock import iso_z
from vidgate.testing.fake_common import BaseStats, FakeUpstream
from vidgate.testing.fake_delivery import Delivery
from vidgate.testing.fake_faults import Reply, nginx_error_page
from vidgate.testing.fake_files import FileBody
from vidgate.testing.fake_media import TIERS, nearest_ratio, output_size, tiny_mp4
from vidgate.testing.fake_pixverse_spec import ERRCODES, FakePixVerseConfig, pixverse_webhook_signature

MB = 1_000_000


@dataclasses.dataclass
class PixVerseStats(BaseStats):
    submits: int = 0
    submits_by_trace_id: dict[str, int] = dataclasses.field(default_factory=dict)
    replays: int = 0
    replays_by_endpoint: dict[str, int] = dataclasses.field(default_factory=dict)
    missing_trace_id: int = 0
    uploads: int = 0
    upload_errors: dict[str, int] = dataclasses.field(default_factory=dict)
    webhook_attempts: int = 0
    webhooks_sent: int = 0
    webhooks_failed: int = 0


@dataclasses.dataclass(slots=True)
class UploadedImage:
    id: int
    width: int
    height: int
    format: str
    size: int


@dataclasses.dataclass(slots=True)
class PixJob:
    id: int
    kind: str
    request: dict[str, Any]
    credits: int
    ratio: str
    created_at: float
    done_at: float
    final_status: int
    base_url: str
    trace_id: str
    status: int = 5
    finished_at: float | None = None


def pix_reply(code: int, resp: Any, http_status: int, message: str | None = None) -> Reply:
    """The `{ErrCode, ErrMsg, Resp}` envelope; errors carry an empty `Resp` object."""
    body = {
        "ErrCode": code,
        "ErrMsg": message or ERRCODES.get(code, "error"),
        "Resp": resp if code == 0 else {},
    }
    return Reply(200 if code == 0 else http_status, body)


class FakePixVerse(FakeUpstream[FakePixVerseConfig, PixVerseStats]):
    api_endpoints = ("upload", "generate", "result")

    def _new_stats(self) -> PixVerseStats:
        return PixVerseStats()

    def _reset_jobs(self) -> None:
        self.images: dict[int, UploadedImage] = {}
        self.jobs: dict[int, PixJob] = {}
        self.trace_cache: OrderedDict[str, Reply] = OrderedDict()
        self._events: list[tuple[float, int]] = []
        self._in_flight = 0
        self._next_image = 100_000_000 + self.rng.randrange(10**6)
        self._next_video = 300_000_000_000 + self.rng.randrange(10**8)

    # --- trace-id replay (§2.1: a reused Ai-trace-id returns the earlier result) -----------------
    def replay(self, trace_id: str, endpoint: str) -> Reply | None:
        cached = self.trace_cache.get(trace_id)
        if cached is None:
            return None
        self.trace_cache.move_to_end(trace_id)
        self.stats.replays += 1
        self.stats.bump("replays_by_endpoint", endpoint)
        return cached

    def remember(self, trace_id: str, reply: Reply) -> None:
        if reply.body.get("ErrCode") != 0 and not self.config.replay_errors:
            return
        self.trace_cache[trace_id] = reply
        while len(self.trace_cache) > self.config.trace_cache_size:
            self.trace_cache.popitem(last=False)

    # --- uploads and jobs ------------------------------------------------------------------------
    def add_image(self, width: int, height: int, fmt: str, size: int) -> UploadedImage:
        self._next_image += self.rng.randrange(1, 1000)
        image = UploadedImage(self._next_image, width, height, fmt, size)
        self.images[image.id] = image
        return image

    def video_status(self, video_id: int) -> int | None:
        job = self.jobs.get(video_id)
        return None if job is None else job.status

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def output_ratio(self, kind: str, request: dict[str, Any]) -> str:
        if kind in ("text", "fusion"):
            return str(request["aspect_ratio"])
        if kind == "extend":
            return self.jobs[request["source_video_id"]].ratio
        image = self.images[request["img_id"] if kind == "img" else request["first_frame_img"]]
        return nearest_ratio(image.width, image.height)

    def new_job(
        self,
        kind: str,
        request: dict[str, Any],
        credits: int,
        base_url: str,
        trace_id: str,
        final_status: int,
    ) -> PixJob:
        cfg, now = self.config, self.clock.now()
        self._next_video += self.rng.randrange(1, 1000)
        if request["seed"] is None:
            request = {**request, "seed": self.rng.randrange(0, 2147483647)}
        ratio = self.output_ratio(kind, request)
        done = now + cfg.generation_base_s + cfg.generation_per_video_s * request["duration"]
        job = PixJob(
            self._next_video, kind, request, credits, ratio, now, done, final_status, base_url, trace_id
        )
        self.jobs[job.id] = job
        heapq.heappush(self._events, (done, job.id))
        self._in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
        return job

    def _process_due(self, now: float) -> None:
        while self._events and self._events[0][0] <= now:
            when, job_id = heapq.heappop(self._events)
            job = self.jobs.get(job_id)
            if job is None or job.status != 5:
                continue
            job.status, job.finished_at = job.final_status, when
            self._in_flight -= 1
            if self.config.webhook_url and job.kind in self.config.webhook_endpoints:
                self._queue_webhook(job, self.config.webhook_url)

    # --- views -----------------------------------------------------------------------------------
    def file_size(self, job: PixJob) -> int:
        return len(tiny_mp4(job.request["duration"], job.ratio, job.request["generate_audio_switch"]))

    def result_view(self, job: PixJob) -> dict[str, Any]:
        req, done = job.request, job.status == 1
        width, height = output_size(req["quality"], job.ratio)
        url = self.files.url(job.base_url, str(job.id), "video.mp4", self.config.url_ttl_s) if done else ""
        return {
            "id": job.id,
            "status": job.status,
            "url": url,
            "prompt": req["prompt"],
            "negative_prompt": req["negative_prompt"],
            "seed": req["seed"],
            "style": req["style"],
            "create_time": iso_z(job.created_at),
            "modify_time": iso_z(job.finished_at or job.created_at),
            "outputWidth": width,
            "outputHeight": height,
            "resolution_ratio": TIERS[req["quality"]],
            "size": self.file_size(job) if done else 0,
            "has_audio": req["generate_audio_switch"],
            # Moderated videos are refunded (§2.6); other failures keep their charge (unconfirmed).
            "credits": 0 if job.status == 7 else job.credits,
        }

    def job_view(self, job_id: str) -> dict[str, Any] | None:
        job = self.jobs.get(int(job_id)) if job_id.isdigit() else None
        if job is None:
            return None
        return {**dataclasses.asdict(job), "result": self.result_view(job)}

    def _extra_stats(self) -> dict[str, Any]:
        by_status: dict[str, int] = {}
        for job in self.jobs.values():
            by_status[str(job.status)] = by_status.get(str(job.status), 0) + 1
        return {
            "jobs_by_status": by_status,
            "in_flight_now": self._in_flight,
            "images_stored": len(self.images),
        }

    async def resolve_file(self, job_id: str, name: str) -> tuple[FileBody, float] | None:
        with self.lock:
            job = self.jobs.get(int(job_id)) if job_id.isdigit() else None
            if job is None or job.status != 1 or job.finished_at is None or name != "video.mp4":
                return None
            args = (job.request["duration"], job.ratio, job.request["generate_audio_switch"])
            finished = job.finished_at
        return FileBody(tiny_mp4(*args), "video/mp4"), finished

    def http_fault_response(self, status: int) -> Response:
        return Response(nginx_error_page(status), status_code=status, media_type="text/html")

    # --- webhooks (§2.9) -------------------------------------------------------------------------
    def _queue_webhook(self, job: PixJob, url: str) -> None:
        cfg, stats = self.config, self.stats
        view = self.result_view(job)
        # Example in §2.9 shows `size` as 10.5, read here as megabytes (a guess).
        payload = {
            "id": str(job.id),
            "status": job.status,
            "url": view["url"],
            "size": round(view["size"] / MB, 3),
            "has_audio": view["has_audio"],
            "credits": view["credits"],
        }
        body = json.dumps(payload, separators=(",", ":")).encode()

        def build() -> tuple[dict[str, str], bytes]:
            timestamp, nonce = str(int(self.clock.now())), secrets.token_hex(16)
            signature = pixverse_webhook_signature(
                timestamp, nonce, payload, cfg.webhook_secret, cfg.webhook_sort_keys
            )
            headers = {
                "Content-Type": "application/json",
                "Webhook-Timestamp": timestamp,
                "Webhook-Nonce": nonce,
                "Webhook-Signature": signature,
                "Ai-Trace-Id": job.trace_id,
            }
            return headers, body

        def on_attempt(ok: bool) -> None:
            with self.lock:
                stats.webhook_attempts += 1

        def on_done(ok: bool) -> None:
            with self.lock:
                if ok:
                    stats.webhooks_sent += 1
                else:
                    stats.webhooks_failed += 1

        self.deliverer.enqueue(
            Delivery(
                key=str(job.id),
                url=url,
                label=str(job.status),
                build=build,
                accept=lambda status, content: status == 200 and content == b"ok",
                retry_delays_s=list(cfg.webhook_retry_delays_s),
                on_attempt=on_attempt,
                on_done=on_done,
            )
        )
