"""pytest_taskito: pytest fixtures that run tasks through the real taskito engine.

Installed with taskito and registered as the pytest plugin ``taskito``
(entry point ``pytest11``); ``-p no:taskito`` turns it off. See docs/testing.md.
"""

from pytest_taskito._settings import Settings
from pytest_taskito._worker import TaskitoWorker

__all__ = ["Settings", "TaskitoWorker"]
