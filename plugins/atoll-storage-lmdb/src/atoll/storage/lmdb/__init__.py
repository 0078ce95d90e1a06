"""Storage engine plugin on LMDB."""

__version__ = "0.1.0"
