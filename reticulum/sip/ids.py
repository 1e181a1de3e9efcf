"""Identifiers we mint: tags and the branch cookie (RFC 3261 §8.1.1.7, §19.3)."""
from __future__ import annotations

import os
import random

#: every RFC 3261 branch starts with it (§8.1.1.7); older branches are matched the RFC 2543 way
MAGIC_COOKIE = "z9hG4bK"

_random = random.Random(os.urandom(16))


def new_tag() -> str:
    """A To or From tag (§19.3: at least 32 random bits). Unique, not secret: no system call
    per tag."""
    return "%012x" % _random.getrandbits(48)
