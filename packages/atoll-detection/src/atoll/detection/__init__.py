"""atoll.detection: failure detectors as pure, deterministic units.

SWIM probing (direct + k indirect) with the Lifeguard extensions — local health
(:class:`Awareness`, fed also by :class:`LoopLagMonitor`), nacks, dynamic
:class:`Suspicion` timeouts — and the :class:`PhiAccrualDetector`. Membership drives
:class:`SwimDetector`; :class:`DetectionConfig` selects ``"swim"``, ``"swim+lifeguard"``
(default) or ``"phi"``. Nothing here reads a clock, draws global randomness or does IO.
"""

from ._awareness import Awareness as Awareness
from ._config import DetectionConfig as DetectionConfig
from ._config import DetectorMode as DetectorMode
from ._looplag import LoopLagMonitor as LoopLagMonitor
from ._phi import ArrivalWindow as ArrivalWindow
from ._phi import PhiAccrualDetector as PhiAccrualDetector
from ._probe import ProbeRing as ProbeRing
from ._probe import ProbeRound as ProbeRound
from ._probe import ProbeVerdict as ProbeVerdict
from ._probe import SwimDetector as SwimDetector
from ._suspicion import Suspicion as Suspicion
from ._suspicion import suspicion_timeout as suspicion_timeout

__version__ = "0.1.0"
