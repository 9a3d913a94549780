"""The clinician's console: ``bciarm monitor`` (web app) over a session observer.

* :mod:`.observer` — what the monitor needs from a session (messages in, commands out) and
  the real-time backend;
* :mod:`.inline` — an inline session the console can steer (also runs session plans);
* :mod:`.live` — the running summary the page shows;
* :mod:`.app`, :mod:`.page` — the Starlette app and its single HTML page.
"""
