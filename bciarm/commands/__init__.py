"""Click commands that live in their own modules; ``bciarm.cli`` registers each with one line::

    main.add_command(load_command("bciarm.commands.decode:decode"))
"""

from __future__ import annotations

import importlib

import click


def load_command(target: str) -> click.Command:
    """The click command (or group) at ``"module:attribute"``."""
    module, _, attr = target.partition(":")
    command = getattr(importlib.import_module(module), attr)
    if not isinstance(command, click.Command):
        raise TypeError(f"{target} is not a click command")
    return command
