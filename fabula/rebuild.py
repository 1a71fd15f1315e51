"""Objects that can be rebuilt from the arguments they were constructed with (for checkpoints)."""

from __future__ import annotations


class Rebuildable:
    """Keeps its constructor's arguments so that ``type(obj)(**obj.config())`` rebuilds it.

    A subclass calls ``self.remember(locals())`` first thing in ``__init__`` (after
    ``super().__init__()``); tuples are stored as lists so that the config is JSON.
    """

    def remember(self, arguments: dict) -> None:
        self._arguments = {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in arguments.items()
            if k not in ("self", "__class__")
        }

    def config(self) -> dict:
        """The constructor arguments that rebuild this object (saved in checkpoints)."""
        return dict(self._arguments)
