"""The webphone: static files served on the ws/wss listening ports at ``/``.

The page and its WebSocket share one origin, so a browser that loaded the page
from ``http(s)://host:port/`` registers over ``ws(s)://host:port/``.
"""

from __future__ import annotations

import os
from typing import Optional
from urllib.parse import unquote_to_bytes

__all__ = ["CONTENT_TYPES", "STATIC_DIR", "static_path"]

#: the folder served at "/"
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

#: what the static folder may serve: file extension -> Content-Type; anything else is 404
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}


def static_path(root: str, raw_path: bytes) -> Optional[str]:
    """The file under ``root`` that a request path names, or None when it names nothing
    servable: percent-escapes are decoded first, then any empty, ``.``, ``..`` or hidden
    segment, backslash or NUL refuses the path, as does a known-extension check and a
    real path (symbolic links resolved) outside ``root``.  ``/`` is ``index.html``."""
    try:
        text = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.startswith("/"):
        return None
    text = text[1:] or "index.html"
    parts = text.split("/")
    for part in parts:
        if not part or part.startswith(".") or "\\" in part or "\x00" in part:
            return None
    if os.path.splitext(parts[-1])[1].lower() not in CONTENT_TYPES:
        return None
    base = os.path.realpath(root)
    path = os.path.realpath(os.path.join(base, *parts))
    if not path.startswith(base + os.sep) or not os.path.isfile(path):
        return None
    return path
