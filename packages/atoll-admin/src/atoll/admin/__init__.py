"""atoll.admin: the ``atoll`` command-line tool and the local development cluster.

``atoll dev up -n 3`` starts a loopback cluster (TCP + LMDB); ``atoll status``,
``atoll put/get/delete`` and ``atoll bench`` work against it; ``atoll dev down`` stops it.
"""

from ._cli import app as app
from ._cli import main as main
from ._dev import DevCluster as DevCluster
from ._workload import WorkloadResult as WorkloadResult
from ._workload import run_workload as run_workload

__version__ = "0.2.0"
