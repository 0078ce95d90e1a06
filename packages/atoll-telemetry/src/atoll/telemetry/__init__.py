"""atoll.telemetry: a node's metrics, health probes and their HTTP endpoint.

* :class:`PrometheusMetrics` implements :class:`atoll.core.MetricsRegistry` on
  prometheus-client, one private registry per node object; the node passes it to the
  ``atoll_register_metrics`` hook.
* :class:`HealthRegistry` holds named liveness and readiness checks, evaluated the way
  etcd and Kubernetes do (``?verbose``, ``?exclude=``, one check per sub-path).
* :class:`TelemetryServer` serves ``/metrics``, ``/livez``, ``/readyz`` and
  ``/debug/vars`` over HTTP/1.1 on anyio.
* :class:`EventLoopLagProbe` measures how late the event loop runs timers.
"""

from ._health import DEFAULT_CHECK_TIMEOUT as DEFAULT_CHECK_TIMEOUT
from ._health import CheckOutcome as CheckOutcome
from ._health import CheckResult as CheckResult
from ._health import HealthCheck as HealthCheck
from ._health import HealthRegistry as HealthRegistry
from ._health import HealthReport as HealthReport
from ._health import Probe as Probe
from ._loop_lag import DEFAULT_LAG_INTERVAL as DEFAULT_LAG_INTERVAL
from ._loop_lag import EventLoopLagProbe as EventLoopLagProbe
from ._metrics import CONTENT_TYPE as CONTENT_TYPE
from ._metrics import COUNT_BUCKETS as COUNT_BUCKETS
from ._metrics import LATENCY_SECONDS_BUCKETS as LATENCY_SECONDS_BUCKETS
from ._metrics import RATIO_BUCKETS as RATIO_BUCKETS
from ._metrics import SIZE_BYTES_BUCKETS as SIZE_BYTES_BUCKETS
from ._metrics import MetricConflict as MetricConflict
from ._metrics import PrometheusCounter as PrometheusCounter
from ._metrics import PrometheusGauge as PrometheusGauge
from ._metrics import PrometheusHistogram as PrometheusHistogram
from ._metrics import PrometheusMetrics as PrometheusMetrics
from ._metrics import default_buckets as default_buckets
from ._metrics import validate_label_names as validate_label_names
from ._metrics import validate_metric_name as validate_metric_name
from ._server import ServerLimits as ServerLimits
from ._server import TelemetryServer as TelemetryServer

__version__ = "0.1.0"
