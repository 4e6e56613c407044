"""usaged: an exact, always-current usage dashboard for AI agents run on your own machine."""

from __future__ import annotations

__version__ = "0.1.0"
