"""atoll.node: the composition root that turns a config into a running Atoll node.

``atoll-node --config node.toml`` runs one; :class:`Node` embeds one in a program or test.
"""

from ._cli import main as main
from ._node import Node as Node

__version__ = "0.1.0"
