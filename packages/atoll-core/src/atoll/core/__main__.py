"""``python -m atoll.core``: list the installed plugins and the backends they provide."""

from __future__ import annotations

import sys

from ._errors import PluginError
from ._plugins import installed_plugins, make_plugin_manager, storage_backends, transport_backends


def main() -> int:
    """Print installed plugins and backends; exit 1 if a plugin fails to load."""
    try:
        pm = make_plugin_manager()
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, target in sorted(installed_plugins().items()):
        print(f"plugin    {name:<20} {target}")
    print(f"storage   {', '.join(storage_backends(pm)) or '(none)'}")
    print(f"transport {', '.join(transport_backends(pm)) or '(none)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
