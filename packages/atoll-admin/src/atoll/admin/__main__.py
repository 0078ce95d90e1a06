"""``python -m atoll.admin``: the same as the ``atoll`` command."""

from ._cli import main

main()
