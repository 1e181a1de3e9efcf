"""The webphone: static files served on the ws/wss listening ports at ``/``.

The page and its WebSocket share one origin, so a browser that loaded the page
from ``http(s)://host:port/`` registers over ``ws(s)://host:port/``.
"""

from __future__ import annotations

import os

__all__ = ["STATIC_DIR"]

#: the folder served at "/"
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
