"""The ``twistd reticulum`` plugin.

This module is imported every time twistd looks for plugins, so it stays
light: the server's own modules are imported only when a service is made.
"""

from __future__ import annotations

import sys

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


def _say(message: str, status: int) -> None:
    """One line on stderr, then exit: what every start-up problem looks like."""
    sys.stderr.write("reticulum: %s\n" % (message,))
    sys.stderr.flush()
    raise SystemExit(status)


class Options(usage.Options):
    synopsis = "[-c reticulum.toml]"
    longdesc = (
        "Run the Reticulum SIP proxy and registrar. "
        "`python -m reticulum init PATH` writes a sample configuration."
    )
    optParameters = [
        ["config", "c", "reticulum.toml", "Path to the TOML configuration file."],
    ]

    def opt_version(self) -> None:
        """Print Reticulum's version and exit."""
        from reticulum import __version__

        print("Reticulum %s" % (__version__,))
        sys.exit(0)

    def opt_init_config(self, path: str) -> None:
        """Write a sample configuration file to PATH and exit."""
        from reticulum.__main__ import init_config

        sys.exit(init_config(path))

    opt_init_config.__doc__ = "Write a sample configuration file to PATH and exit."


@implementer(IServiceMaker, IPlugin)
class ReticulumServiceMaker:
    tapname = "reticulum"
    description = "Reticulum SIP proxy and registrar."
    options = Options

    def makeService(self, options):
        from reticulum.config import ConfigError, load_config
        from reticulum.service import StartupError, make_service, preflight

        try:
            config = load_config(options["config"])
        except ConfigError as e:
            _say(str(e), 2)
        twistd_options = getattr(options, "parent", None)
        service = make_service(config)
        service.twistd_options = twistd_options
        if service.daemon:
            # the terminal goes away when twistd forks: check now, while it can be told
            try:
                preflight(config)
            except StartupError as e:
                _say(str(e), 1)
        return service


serviceMaker = ReticulumServiceMaker()
