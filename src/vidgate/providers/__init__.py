"""Providers: the engines and upstreams that turn a validated request into a stored video.

A provider is one module in this package with one `Provider` subclass (`name=` registers it). The
worker calls `run(ctx)` once per claim ("a tick"): a local engine renders and returns `Done`; an
upstream relay submits or polls and returns `Snooze` until the job is finished.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from vidgate.catalog import VideoRequest
from vidgate.config import Settings
from vidgate.status import Phase


@dataclass(frozen=True)
class Done:
    """Finished: `result` holds storage keys and facts about the stored video."""

    result: dict[str, Any]


@dataclass(frozen=True)
class Snooze:
    """Not finished: come back after `delay` seconds (upstream still working, or a retry)."""

    delay: float
    phase: Phase
    values: dict[str, Any] = field(default_factory=dict)


Outcome = Done | Snooze


@dataclass
class TaskContext:
    """What a provider may see and do while it holds a task's lease."""

    task_id: str
    key_id: str
    request: VideoRequest
    attempt: int
    phase: Phase
    upstream_id: str | None
    upstream_state: dict[str, Any] | None
    started_at: float | None
    estimated_time: int
    deadline_at: float | None
    #: A private directory for this tick's files; call `workdir()` to have it created.
    scratch: Path
    load_images: Callable[[], Awaitable[list[Image.Image]]]
    source_video: Callable[[str], Awaitable[tuple[Path, dict[str, Any]]]]
    store_file: Callable[[str, Path], int]
    set_phase: Callable[[Phase], None]
    #: Fraction 0..1 of the engine's own progress; thread-safe (a plain attribute write).
    report_progress: Callable[[float], None]
    #: True once the lease is lost or the task should stop; engines check it between steps.
    should_stop: Callable[[], bool]
    #: Commit phase and values (e.g. `upstream_state`) now, before an outside effect.
    checkpoint: Callable[..., Awaitable[None]]

    def workdir(self) -> Path:
        self.scratch.mkdir(parents=True, exist_ok=True)
        return self.scratch


class Provider(ABC):
    registry: ClassVar[dict[str, type[Provider]]] = {}

    name: ClassVar[str]
    #: Model ids this provider can serve.
    models: ClassVar[frozenset[str]] = frozenset()
    #: Tasks one worker process runs at once for this provider.
    concurrency: ClassVar[int] = 1
    #: Whether it can extend any stored video (an engine working on our files), or only videos
    #: it made itself (an upstream that needs its own job id).
    extends_any_video: ClassVar[bool] = False
    #: Order in a model's default route (lower first): the model's own upstream, then a
    #: general relay, then the local renderer.
    preference: ClassVar[int] = 50

    def __init_subclass__(cls, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is None:
            return
        if name in Provider.registry:
            raise RuntimeError(f"provider {name!r} is registered twice")
        cls.name = name
        Provider.registry[name] = cls

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        """Whether this deployment can use the provider (credentials present, engine installed)."""
        return True

    def max_concurrency(self) -> int:
        return self.concurrency

    def estimated_time(self, request: VideoRequest) -> int:
        return request.estimated_time()

    @abstractmethod
    async def run(self, ctx: TaskContext) -> Outcome: ...

    async def aclose(self) -> None:
        return None


def discover() -> dict[str, type[Provider]]:
    """Import every module of this package so each provider registers itself."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    return dict(Provider.registry)


class Router:
    """Which provider serves a model: the first enabled provider of the model's configured list."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.classes = discover()
        self.enabled = {name: cls for name, cls in self.classes.items() if cls.enabled(settings)}

    def route(self, model: str) -> list[str]:
        configured = self.settings.routes.get(model)
        candidates = configured if configured else self._default_route(model)
        return [n for n in candidates if n in self.enabled and model in self.enabled[n].models]

    def _default_route(self, model: str) -> list[str]:
        serving = [(c.preference, n) for n, c in self.enabled.items() if model in c.models]
        return [name for _, name in sorted(serving)]

    def pick(self, model: str) -> str | None:
        route = self.route(model)
        return route[0] if route else None

    def build(self) -> dict[str, Provider]:
        return {name: cls(self.settings) for name, cls in self.enabled.items()}
