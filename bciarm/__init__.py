"""bciarm: decoded brain activity to safe, smooth motion of assistive effectors.

The package is organised as in ``ARCHITECTURE.md``: ``bus`` (messages, codec,
node API, runtimes), ``sources``, ``decoders``, ``effectors``, ``drivers``,
``tasks``, ``record`` and ``testing`` (checks every registered entry must pass).
"""

__version__ = "0.1.0"
