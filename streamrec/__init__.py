"""streamrec: real-time action recognition for camera streams (SlowFast family)."""

__version__ = "0.1.0"
