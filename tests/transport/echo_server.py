"""A real reactor running the transports with an echoing fake core.

    python -m tests.transport.echo_server CONFIG.toml

Prints one JSON object per line on stdout: {"event": "ready"} once listening,
then one per core call.  The core answers every message on its flow with
b"ECHO " + message, except messages starting with b"SENDTO <transport> <host>
<port> [<server name>]\\n", whose rest is sent with ``send_to`` to that address.
"""

from __future__ import annotations

import json
import sys

from twisted.internet import reactor

from reticulum.config import load_config
from reticulum.transport import BindError, Transports


def emit(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def describe(flow):
    return {"transport": flow.transport, "local": list(flow.local), "remote": list(flow.remote), "conn": flow.conn}


class EchoCore:
    def __init__(self, transports: Transports) -> None:
        self.transports = transports

    def message_received(self, data: bytes, flow) -> None:
        emit(event="receive", flow=describe(flow), size=len(data), data=data[:200].decode("latin-1"))
        if data.startswith(b"SENDTO "):
            line, _, rest = data.partition(b"\n")
            _, transport, host, port, *name = line.decode().split()
            if name:  # the SIP domain a TLS peer must prove it is (RFC 5922)
                out = self.transports.send_to(rest, transport, host, int(port), server_name=name[0])
            else:
                out = self.transports.send_to(rest, transport, host, int(port))
            emit(event="sent_to", flow=describe(out))
        else:
            ok = self.transports.send(b"ECHO " + data, flow)
            emit(event="sent", ok=ok)

    def message_too_large(self, head: bytes, flow) -> None:
        emit(event="too_large", flow=describe(flow), size=len(head))
        self.transports.send(b"SIP/2.0 413 Request Entity Too Large\r\n\r\n", flow)

    def flow_closed(self, flow) -> None:
        emit(event="closed", flow=describe(flow))

    def flow_failed(self, flow) -> None:
        emit(event="failed", flow=describe(flow))


def main() -> None:
    config = load_config(sys.argv[1])
    transports = Transports(config, reactor=reactor)
    try:
        transports.listen(EchoCore(transports))
    except BindError as e:
        emit(event="bind_error", message=str(e))
        sys.exit(1)
    reactor.callWhenRunning(emit, event="ready")
    reactor.run()


if __name__ == "__main__":
    main()
