"""atoll.client: the Atoll client library (async and sync).

``async with AtollClient(["127.0.0.1:7401"]) as c: await c.put(b"k", b"v")``. The client
caches the cluster map, routes each request to its partition's leader, follows NotLeader
hints, refreshes on StaleEpoch, and retries writes idempotently (client id + sequence).
"""

from atoll.core import Consistency as Consistency

from ._client import AtollClient as AtollClient
from ._client import CasResult as CasResult
from ._sync import SyncClient as SyncClient

__version__ = "0.2.0"
