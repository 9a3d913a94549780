"""What a session may record about the people and the machine involved.

Subjects are known to bciarm only by a pseudonymous ID (``privacy.subject_id``
in the config).  By default nothing that identifies a person or a machine is
written: no host name, no user name, and home folders in the recorded command
line are replaced by ``~``.  A config that needs them (a site whose data
management plan asks for the acquisition host) says so with
``privacy.record_host`` / ``privacy.record_user``.
"""

from __future__ import annotations

import getpass
import os
import platform
import re
from pathlib import Path
from typing import Any

#: Pseudonymous subject IDs: letters, digits, ``-``, ``_``, ``.``; no spaces (not a name).
SUBJECT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"

_HOME_RE = re.compile(r"(/home/|/Users/)[^/\s]+")


def scrub_text(text: str) -> str:
    """Replace home folders (``/home/<user>``, ``/Users/<user>``, ``$HOME``) by ``~``."""
    home = str(Path.home())
    if home not in ("/", "/root", ""):
        text = text.replace(home, "~")
    return _HOME_RE.sub("~", text)


def identity(privacy: Any) -> dict[str, Any]:
    """The identifying fields ``session.json`` may hold under a config's ``privacy``.

    Parameters
    ----------
    privacy : PrivacySpec
        ``subject_id``, ``record_host``, ``record_user``.
    """
    out: dict[str, Any] = {"subject_id": privacy.subject_id}
    if privacy.record_host:
        out["host"] = platform.node()
    if privacy.record_user:
        try:
            out["user"] = getpass.getuser()
        except (KeyError, OSError):
            out["user"] = os.environ.get("USER")
    return out


def command_line(argv: list[str], privacy: Any) -> list[str]:
    """The recorded command line: home folders hidden unless ``record_user``."""
    if privacy.record_user:
        return list(argv)
    return [scrub_text(str(a)) for a in argv]
