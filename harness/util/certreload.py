"""Certificates that follow their files: a TLS context whose certificate and key are read again when the files
change, as upstream's components reload theirs (the apiserver's and kubelet's dynamic serving certificates, a
client's rotated certificate), so `harness pki rotate` needs no restart.

`follow(context, cert_file, key_file)` registers a context; `keep_current()` runs in every long-running component
(`harness.cli.lifecycle` starts it) and, every few seconds, loads a changed pair into the same `SSLContext`: new
connections present the new certificate, connections already open keep the old one until they close. A pair
caught half-written (a key that does not match its certificate) is retried on the next round; the context keeps
serving the old pair meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import weakref
from dataclasses import dataclass

log = logging.getLogger("harness.certreload")

#: Seconds between looks at the files (upstream's dynamic certificate controllers look every minute; a test
#: harness wants a rotation seen sooner).
INTERVAL = 5.0


@dataclass
class _Followed:
    context: weakref.ref[ssl.SSLContext]
    cert_file: str
    key_file: str
    stamp: tuple[float, ...]


_FOLLOWED: list[_Followed] = []


def _stamp(*paths: str) -> tuple[float, ...]:
    out: list[float] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            return ()
        out += [st.st_mtime, float(st.st_ino), float(st.st_size)]
    return tuple(out)


def follow(context: ssl.SSLContext, cert_file: str, key_file: str = "") -> ssl.SSLContext:
    """Keep `context`'s certificate the one in these files from now on; returns the context."""
    key_file = key_file or cert_file
    _FOLLOWED[:] = [f for f in _FOLLOWED if f.context() is not None]  # contexts no longer used are let go
    _FOLLOWED.append(_Followed(weakref.ref(context), cert_file, key_file, _stamp(cert_file, key_file)))
    return context


def forget(context: ssl.SSLContext) -> None:
    """Stop following `context` (a server that closed)."""
    _FOLLOWED[:] = [f for f in _FOLLOWED if f.context() not in (None, context)]


def reload_changed() -> list[str]:
    """Load every changed pair into its context; the certificate files loaded (a pair that fails to load, e.g.
    half-written, is kept as it was and tried again next time)."""
    loaded: list[str] = []
    for f in list(_FOLLOWED):
        context = f.context()
        stamp = _stamp(f.cert_file, f.key_file)
        if context is None or not stamp or stamp == f.stamp:
            continue
        try:
            # tried on a scratch context first: a failed load leaves a context with the new certificate and the
            # old key, which then fails every handshake
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(f.cert_file, f.key_file)
            context.load_cert_chain(f.cert_file, f.key_file)
        except (OSError, ssl.SSLError) as exc:
            log.warning("certificate %s changed but cannot be loaded yet: %s", f.cert_file, exc)
            continue
        f.stamp = stamp
        loaded.append(f.cert_file)
        log.info("loaded a new certificate and key pair from %s and %s", f.cert_file, f.key_file)
    return loaded


async def keep_current(interval: float = INTERVAL) -> None:
    """Reload changed pairs every `interval` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        reload_changed()
