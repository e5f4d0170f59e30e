"""The fake Vidu's task engine: state progression, the per-organisation queue, views and callbacks.

Tasks move `created -> queueing -> processing -> success | failed`. At most `concurrency` tasks are
`processing`; the rest wait in `queueing` in submission order (§1.7). Changes are events on a heap
keyed by virtual time, applied lazily by `_process_due`, so an idle task costs no CPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import uuid
from collections import deque
from typing import Any

from starlette.responses import Response

from vidgate.testing.fake_clock import http_date, iso_z
from vidgate.testing.fake_common import BaseStats, FakeUpstream
from vidgate.testing.fake_delivery import Delivery
from vidgate.testing.fake_faults import Reply, nginx_error_page
from vidgate.testing.fake_files import FileBody
from vidgate.testing.fake_media import output_size, tiny_jpeg, tiny_mp4
from vidgate.testing.fake_vidu_spec import ERRORS, MESSAGES, FakeViduConfig, vidu_signature

ACTIVE = ("created", "queueing", "processing")
REPORTED_FPS = 24  # what the task list reports; the served file itself is 8 fps


@dataclasses.dataclass
class ViduStats(BaseStats):
    submits: int = 0
    submits_by_payload: dict[str, int] = dataclasses.field(default_factory=dict)
    lists: int = 0
    cancels: int = 0
    callback_attempts: int = 0
    callbacks_sent: int = 0
    callbacks_by_state: dict[str, int] = dataclasses.field(default_factory=dict)
    callbacks_failed: int = 0


@dataclasses.dataclass(slots=True)
class ViduTask:
    seq: int
    id: str
    creation_id: str
    request: dict[str, Any]
    credits: int
    created_at: float
    base_url: str
    token: str
    fail_code: str
    file_ratio: str
    processing_s: float
    state: str = "created"
    err_code: str = ""
    started_at: float | None = None
    finished_at: float | None = None


def vidu_error(reason: str, message: str | None = None) -> Reply:
    status = ERRORS[reason]
    body = {
        "code": status,
        "reason": reason,
        "message": message or MESSAGES.get(reason, reason),
        "metadata": {"trace_id": uuid.uuid4().hex},
    }
    return Reply(status, body)


class FakeVidu(FakeUpstream[FakeViduConfig, ViduStats]):
    api_endpoints = ("submit", "poll", "list", "cancel")

    def _new_stats(self) -> ViduStats:
        return ViduStats()

    def _reset_jobs(self) -> None:
        self.tasks: dict[str, ViduTask] = {}
        self._events: list[tuple[float, int, str, str]] = []
        self._ready: deque[str] = deque()
        self._processing = 0
        self._event_seq = 0
        self._next_id = 880_000_000_000_000_000 + self.rng.randrange(10**14)

    # --- creation --------------------------------------------------------------------------------
    def new_task(
        self, request: dict[str, Any], credits: int, base_url: str, fail_code: str, ratio: str
    ) -> ViduTask:
        """Register an accepted create (lock held) and schedule its progression."""
        cfg, now = self.config, self.clock.now()
        self._next_id += self.rng.randrange(1, 10_000)
        seq = len(self.tasks) + 1
        processing = cfg.processing_base_s + cfg.processing_per_video_s * request["duration"]
        if fail_code:
            processing *= cfg.failure_at
        if request["seed"] == 0:
            request = {**request, "seed": self.rng.randrange(1, 2147483647)}
        task = ViduTask(
            seq=seq,
            id=str(self._next_id),
            creation_id=str(self._next_id + 1),
            request=request,
            credits=credits,
            created_at=now,
            base_url=base_url,
            token=cfg.api_key,
            fail_code=fail_code,
            file_ratio=ratio,
            processing_s=processing,
        )
        self.tasks[task.id] = task
        self._push(now + cfg.created_s, task.id, "queue")
        self._push(now + cfg.created_s + cfg.queueing_s, task.id, "ready")
        return task

    def active_count(self) -> int:
        return sum(1 for t in self.tasks.values() if t.state in ACTIVE)

    def _push(self, when: float, task_id: str, kind: str) -> None:
        self._event_seq += 1
        heapq.heappush(self._events, (when, self._event_seq, task_id, kind))

    # --- progression -----------------------------------------------------------------------------
    def _process_due(self, now: float) -> None:
        while self._events and self._events[0][0] <= now:
            when, _, task_id, kind = heapq.heappop(self._events)
            task = self.tasks.get(task_id)
            if task is None:
                continue
            if kind == "queue" and task.state == "created":
                self._set_state(task, "queueing", when)
            elif kind == "ready" and task.state == "queueing":
                self._ready.append(task.id)
                self._start_ready(when)
            elif kind == "finish" and task.state == "processing":
                self._finish(task, when, task.fail_code)
        self._start_ready(now)  # the concurrency knob may have been raised

    def _start_ready(self, when: float) -> None:
        while self._ready and self._processing < self.config.concurrency:
            task = self.tasks.get(self._ready.popleft())
            if task is None or task.state != "queueing":
                continue
            task.started_at = when
            self._processing += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self._processing)
            self._set_state(task, "processing", when)
            self._push(when + task.processing_s, task.id, "finish")

    def _finish(self, task: ViduTask, when: float, fail_code: str) -> None:
        if task.state == "processing":
            self._processing -= 1
        task.finished_at = when
        task.err_code = fail_code
        self._set_state(task, "failed" if fail_code else "success", when)
        self._start_ready(when)

    def cancel(self, task: ViduTask) -> bool:
        if task.state not in ACTIVE:
            return False
        self._finish(task, self.clock.now(), "UserCancelled")
        return True

    def _set_state(self, task: ViduTask, state: str, when: float) -> None:
        task.state = state
        if task.request["callback_url"] and state in self.config.callback_states:
            self._queue_callback(task, state)

    # --- views -----------------------------------------------------------------------------------
    def spelled(self, state: str) -> str:
        return self.config.queueing_spelling if state == "queueing" else state

    def creations(self, task: ViduTask, with_video: bool = False) -> list[dict[str, Any]]:
        if task.state != "success":
            return []
        ttl = self.config.url_ttl_s
        item: dict[str, Any] = {
            "id": task.creation_id,
            "url": self.files.url(task.base_url, task.id, "video.mp4", ttl),
            "cover_url": self.files.url(task.base_url, task.id, "cover.jpg", ttl),
        }
        if task.request["watermark"]:
            item["watermarked_url"] = self.files.url(task.base_url, task.id, "video_watermarked.mp4", ttl)
        if with_video:
            width, height = output_size(task.request["resolution"], task.file_ratio)
            item["video"] = {
                "duration": float(task.request["duration"]),
                "fps": REPORTED_FPS,
                "resolution": {"width": width, "height": height},
            }
        return [item]

    def query_view(self, task: ViduTask) -> dict[str, Any]:
        """The body of GET /ent/v2/tasks/{id}/creations (and of callbacks)."""
        return {
            "id": task.id,
            "state": self.spelled(task.state),
            "err_code": task.err_code,
            # Failed tasks report 0 credits: a guess, refunds are unconfirmed (§1.9).
            "credits": 0 if task.state == "failed" else task.credits,
            "payload": task.request["payload"],
            "bgm": task.request["bgm"],
            "off_peak": task.request["off_peak"],
            "creations": self.creations(task),
        }

    def list_view(self, task: ViduTask) -> dict[str, Any]:
        req = task.request
        return {
            "id": task.id,
            "key_id": "key_" + hashlib.sha256(task.token.encode()).hexdigest()[:12],
            "type": "reference2video",
            "model": req["model"],
            "prompt": req["prompt"],
            "images": req["images"],
            "duration": req["duration"],
            "resolution": req["resolution"],
            "aspect_ratio": req["aspect_ratio"],
            "state": self.spelled(task.state),
            "err_code": task.err_code,
            "credits": 0 if task.state == "failed" else task.credits,
            "payload": req["payload"],
            "created_at": iso_z(task.created_at),
            "creations": self.creations(task, with_video=True),
        }

    def create_view(self, task: ViduTask) -> dict[str, Any]:
        req = task.request
        keys = (
            "model",
            "images",
            "prompt",
            "duration",
            "seed",
            "aspect_ratio",
            "resolution",
            "movement_amplitude",
            "payload",
            "off_peak",
            "bgm",
            "audio",
            "watermark",
            "wm_position",
            "wm_url",
            "meta_data",
            "client_request_id",
        )
        return {
            "task_id": task.id,
            "state": "created",
            **{k: req[k] for k in keys},
            "credits": task.credits,
            "created_at": iso_z(task.created_at),
        }

    def job_view(self, job_id: str) -> dict[str, Any] | None:
        task = self.tasks.get(job_id)
        if task is None:
            return None
        view = dataclasses.asdict(task)
        view.pop("token")
        view["query"] = self.query_view(task)
        return view

    def _extra_stats(self) -> dict[str, Any]:
        by_state: dict[str, int] = {}
        for task in self.tasks.values():
            by_state[task.state] = by_state.get(task.state, 0) + 1
        return {
            "tasks_by_state": by_state,
            "processing_now": self._processing,
            "queued_ready": len(self._ready),
        }

    # --- files and transport faults --------------------------------------------------------------
    async def resolve_file(self, job_id: str, name: str) -> tuple[FileBody, float] | None:
        with self.lock:
            task = self.tasks.get(job_id)
            if task is None or task.state != "success" or task.finished_at is None:
                return None
            duration, ratio, audio = task.request["duration"], task.file_ratio, task.request["audio"]
            finished = task.finished_at
        if name == "cover.jpg":
            return FileBody(tiny_jpeg(ratio), "image/jpeg"), finished
        if name == "video.mp4" or (name == "video_watermarked.mp4" and task.request["watermark"]):
            return FileBody(tiny_mp4(duration, ratio, audio), "video/mp4"), finished
        return None

    def http_fault_response(self, status: int) -> Response:
        if status in (429, 500):
            reply = vidu_error("TooManyRequests" if status == 429 else "InternalServiceFailure")
            return Response(reply.encode(), status_code=status, media_type="application/json")
        return Response(nginx_error_page(status), status_code=status, media_type="text/html")

    # --- callbacks (§1.8) ------------------------------------------------------------------------
    def _queue_callback(self, task: ViduTask, state: str) -> None:
        cfg, stats = self.config, self.stats  # bound now: a reset must not receive old deliveries
        body = json.dumps(self.query_view(task), ensure_ascii=False, separators=(",", ":")).encode()
        url, token = task.request["callback_url"], task.token
        retries = cfg.callback_retries if state in ("success", "failed") else 0

        def build() -> tuple[dict[str, str], bytes]:
            date = http_date(self.clock.now())
            nonce = str(uuid.uuid4())
            signed = [("Date", date), ("x-request-nonce", nonce)]
            headers = {
                "Content-Type": "application/json",
                "Date": date,
                "x-request-nonce": nonce,
                "X-HMAC-SIGNED-HEADERS": "Date;x-request-nonce",
                "X-HMAC-ALGORITHM": "hmac-sha256",
                "X-HMAC-ACCESS-KEY": "vidu",
                "X-HMAC-SIGNATURE": vidu_signature("POST", url, date, signed, token),
            }
            return headers, body

        def on_attempt(ok: bool) -> None:
            with self.lock:
                stats.callback_attempts += 1

        def on_done(ok: bool) -> None:
            with self.lock:
                if ok:
                    stats.callbacks_sent += 1
                    stats.bump("callbacks_by_state", state)
                else:
                    stats.callbacks_failed += 1

        self.deliverer.enqueue(
            Delivery(
                key=task.id,
                url=url,
                label=state,
                build=build,
                accept=lambda status, _body: 200 <= status < 300,
                retry_delays_s=[cfg.callback_retry_delay_s] * retries,
                on_attempt=on_attempt,
                on_done=on_done,
            )
        )
