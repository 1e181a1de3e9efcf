# Run with:  twistd -ny reticulum.tac
# The configuration file is $RETICULUM_CONFIG, or reticulum.toml in the
# current folder.

import os
import sys

from twisted.application import service

from reticulum.config import ConfigError, load_config
from reticulum.service import make_service

_path = os.environ.get("RETICULUM_CONFIG") or "reticulum.toml"
try:
    _config = load_config(_path)
except ConfigError as e:
    sys.stderr.write("reticulum: %s\n" % (e,))
    sys.stderr.flush()
    raise SystemExit(2)

application = service.Application("reticulum")
make_service(_config).setServiceParent(application)
