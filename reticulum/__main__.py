"""``python -m reticulum``: the twistd plugin in the foreground, and ``init``.

    python -m reticulum [--config PATH] ...   same as ``twistd -n --pidfile= reticulum ...``
    python -m reticulum init PATH             write a sample configuration to PATH
    python -m reticulum --version             print the version
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional

SAMPLE = "sample.toml"


def sample_config() -> bytes:
    """The sample configuration shipped in the package."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, SAMPLE), "rb") as f:
        return f.read()


def init_config(path: str) -> int:
    """Write the sample configuration to ``path`` (never over an existing file)."""
    try:
        data = sample_config()
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        with open(path, "xb") as f:
            f.write(data)
    except FileExistsError:
        sys.stderr.write("reticulum: %s already exists; not overwritten\n" % (path,))
        return 1
    except OSError as e:
        sys.stderr.write("reticulum: cannot write %s: %s\n" % (path, e.strerror or e))
        return 1
    print("wrote %s; edit it, then: twistd -n reticulum --config %s" % (path, path))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "init":
        if len(args) != 2 or args[1].startswith("-"):
            sys.stderr.write("usage: python -m reticulum init PATH\n")
            return 2
        return init_config(args[1])
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", "-n", "--pidfile=", "reticulum"] + args
    run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
