"""atoll.transport.tcp: node-to-node and client transport on TCP (anyio streams).

Select it with ``[transport] backend = "tcp"``; the node's ``listen`` address is bound
(port 0 picks a free port). :class:`TcpTransport` can also be built directly::

    t = TcpTransport(TransportConfig(backend="tcp"), node_id="n1", listen="127.0.0.1:0")
    await t.start(handler)
    reply = await t.request("127.0.0.1:7402", Frame("ping"), timeout=1.0)
"""

from ._transport import HELLO as HELLO
from ._transport import TcpStats as TcpStats
from ._transport import TcpTransport as TcpTransport

__version__ = "0.2.0"
