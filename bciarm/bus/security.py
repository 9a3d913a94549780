"""CURVE keys for the real-time bus.

``bciarm keys generate DIR`` writes a key pair for the broker (``server``) and
for each client name given, in ZeroMQ's certificate format
(``zmq.auth.create_certificates``)::

    DIR/server.key  DIR/server.key_secret       broker
    DIR/clients/<name>.key                      public keys the broker admits
    DIR/private/<name>.key_secret               a client's own pair

A graph with ``security: curve`` and ``realtime.keys_dir: DIR`` makes every
*bound* bus socket a CURVE server that admits only the public keys in
``DIR/clients``: the broker's XSUB/XPUB and each process's data PUB (the
direct data path; every publishing process holds the ``server`` pair).  Every
connecting socket is a CURVE client with ``DIR/private/<client>.key_secret``.
A peer without an admitted key can neither publish (inject intents) nor
subscribe (read neural data): the handshake fails before any frame flows.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import zmq
import zmq.auth


def generate_keys(keys_dir: str | Path, clients: tuple[str, ...] = ("node",)) -> Path:
    """Create the server pair and one pair per client under ``keys_dir``."""
    if not zmq.has("curve"):
        raise RuntimeError("this libzmq was built without CURVE support")
    d = Path(keys_dir)
    (d / "clients").mkdir(parents=True, exist_ok=True)
    (d / "private").mkdir(parents=True, exist_ok=True)
    if not (d / "server.key_secret").exists():
        zmq.auth.create_certificates(str(d), "server")
    for name in clients:
        if (d / "private" / f"{name}.key_secret").exists():
            continue
        pub, _ = zmq.auth.create_certificates(str(d / "private"), name)
        shutil.copy(pub, d / "clients" / f"{name}.key")
        Path(pub).unlink()
    for f in d.rglob("*.key_secret"):
        f.chmod(0o600)
    return d


def security_spec(mode: str, keys_dir: str | Path | None, client: str = "node") -> dict[str, Any] | None:
    """The JSON-able security part of a process spec."""
    if mode != "curve":
        return None
    if keys_dir is None:
        raise ValueError("security: curve needs realtime.keys_dir (see `bciarm keys generate`)")
    d = Path(keys_dir).resolve()
    return {"mode": "curve", "server_public": str(d / "server.key"),
            "server_secret": str(d / "server.key_secret"), "clients_dir": str(d / "clients"),
            "client_secret": str(d / "private" / f"{client}.key_secret")}


def load_server_keys(sec: dict[str, Any]) -> tuple[bytes, bytes]:
    pub, secret = zmq.auth.load_certificate(sec["server_secret"])
    assert secret is not None
    return pub, secret


def load_client_keys(sec: dict[str, Any]) -> tuple[bytes, bytes, bytes]:
    pub, secret = zmq.auth.load_certificate(sec["client_secret"])
    server_pub, _ = zmq.auth.load_certificate(sec["server_public"])
    if secret is None:
        raise ValueError(f"{sec['client_secret']} holds no secret key")
    return pub, secret, server_pub


def serve_curve(ctx: zmq.Context, socks: list[zmq.Socket], sec: dict[str, Any] | None) -> Any:
    """Make ``socks`` CURVE servers admitting ``clients_dir`` (no-op without CURVE).

    Returns the started ZAP authenticator (stop it before destroying ``ctx``) or None.
    """
    if not sec or sec.get("mode") != "curve":
        return None
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(sec["clients_dir"]))
    pub, secret = load_server_keys(sec)
    for s in socks:
        s.curve_server = True
        s.curve_publickey = pub
        s.curve_secretkey = secret
    return auth
