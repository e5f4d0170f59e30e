from __future__ import annotations

from vidgate.cli import main

main()
