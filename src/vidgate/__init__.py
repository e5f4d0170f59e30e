"""vidgate: a self-hosted gateway for asynchronous AI video generation (apimart video API)."""

from __future__ import annotations

__version__ = "0.1.0"
