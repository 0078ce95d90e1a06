"""``python -m atoll.node``: the same as the ``atoll-node`` command."""

import sys

from ._cli import main

sys.exit(main())
