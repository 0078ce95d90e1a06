"""atoll.membership: SWIM gossip membership — join, leave, dissemination, incarnations,
anti-entropy — as a pure core (:class:`MembershipCore`) with an anyio shell
(:class:`MembershipService`) over any :class:`atoll.core.Transport`.

Failure detection comes from :mod:`atoll.detection` (SWIM, SWIM+Lifeguard, phi accrual),
selected by ``MembershipConfig.detection.mode``. :class:`SimCluster` runs many cores on
``atoll.testing``'s simulated network in virtual time.
"""

from ._broadcast import BroadcastQueue as BroadcastQueue
from ._broadcast import retransmit_limit as retransmit_limit
from ._config import MembershipConfig as MembershipConfig
from ._core import MembershipCore as MembershipCore
from ._core import MembershipStats as MembershipStats
from ._core import Output as Output
from ._messages import Ack as Ack
from ._messages import Alive as Alive
from ._messages import Dead as Dead
from ._messages import ForeignGossip as ForeignGossip
from ._messages import Gossip as Gossip
from ._messages import Heartbeats as Heartbeats
from ._messages import MalformedGossip as MalformedGossip
from ._messages import Message as Message
from ._messages import Nack as Nack
from ._messages import Ping as Ping
from ._messages import PingReq as PingReq
from ._messages import Suspect as Suspect
from ._messages import Sync as Sync
from ._messages import Update as Update
from ._messages import decode_message as decode_message
from ._messages import encode_message as encode_message
from ._messages import wire_size as wire_size
from ._metrics import MembershipMetrics as MembershipMetrics
from ._service import FRAME_PREFIX as FRAME_PREFIX
from ._service import MembershipService as MembershipService
from ._simcluster import SimCluster as SimCluster
from ._simcluster import SimNode as SimNode

__version__ = "0.1.0"
