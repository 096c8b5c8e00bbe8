"""A fake Discord at https://localhost:8443/api/v10 and wss://localhost:8443, for trying offline."""

import contextlib
import ssl
import time

import trustme

from gateway_proto.testing import FakeGateway, LoopbackGateway

TOKEN = "offline-token"  # the only token the fake gateway accepts


def offline_gateway(port: int = 8443) -> LoopbackGateway:
    """The fake gateway behind TLS; writes ca.pem, the CA its certificate chains to."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path("ca.pem")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    return LoopbackGateway(FakeGateway(token=TOKEN), ssl_context=context, port=port)


if __name__ == "__main__":  # python examples/offline_gateway.py, until Ctrl-C
    with offline_gateway() as server, contextlib.suppress(KeyboardInterrupt):
        print(f"serving {server.url} and {server.api_url}, token {TOKEN}", flush=True)
        while True:
            time.sleep(1)
            server.call(lambda gw: gw.dispatch("MESSAGE_CREATE", {"content": "hello"}))
