"""atoll.transport.nats: node-to-node transport over a NATS server (nats-py).

Select it with::

    [transport]
    backend = "nats"
    servers = ["nats://127.0.0.1:4222"]
    subject_prefix = "atoll"      # node n1 listens on subject atoll.n1

One-way frames are plain publishes on the peer's subject; requests carry a reply inbox.
Frames above the server's ``max_payload`` are chunked and reassembled.
"""

from ._transport import NatsStats as NatsStats
from ._transport import NatsTransport as NatsTransport

__version__ = "0.2.0"
