"""The Python SDK's public entry (`from vidgate.client import Client`); it lives in `vidgate.sdk`.

from vidgate import Client

client = Client()  # VIDGATE_API_KEY, VIDGATE_BASE_URL
task = client.videos.create(model="pixverse-v6", prompt="a red kite", duration=5)
task = client.tasks.wait(task)
client.videos.download(task, "kite.mp4")
"""

from __future__ import annotations

from vidgate.sdk import *  # noqa: F403
from vidgate.sdk import __all__ as __all__
