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


class Options(usage.Options):
    synopsis = "[-c reticulum.toml]"
    longdesc = "Run the Reticulum SIP proxy and registrar."
    optParameters = [
        ["config", "c", "reticulum.toml", "Path to the TOML configuration file."],
    ]


@implementer(IServiceMaker, IPlugin)
class ReticulumServiceMaker:
    tapname = "reticulum"
    description = "Reticulum SIP proxy and registrar."
    options = Options

    def makeService(self, options):
        from reticulum.config import ConfigError, load_config
        from reticulum.service import make_service

        try:
            config = load_config(options["config"])
        except ConfigError as e:
            sys.stderr.write("reticulum: %s\n" % (e,))
            sys.stderr.flush()
            raise SystemExit(2)
        return make_service(config)


serviceMaker = ReticulumServiceMaker()
