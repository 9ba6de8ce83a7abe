"""Encryption at rest: values of chosen resources are encrypted before they reach etcd, as upstream's
`--encryption-provider-config` does, with its file format and its stored format.

The file is an apiserver.config.k8s.io/v1 EncryptionConfiguration: per list of resources, providers in order.
The first provider encrypts every write; every provider is tried for reads, so a config that puts a new key (or
`identity`) first still reads what older keys wrote. Stored values carry upstream's prefix:

- `aescbc`: `k8s:enc:aescbc:v1:<key name>:` + 16-byte IV + AES-CBC ciphertext (PKCS#7 padding);
- `aesgcm`: `k8s:enc:aesgcm:v1:<key name>:` + 12-byte nonce + AES-GCM ciphertext and tag, the etcd key as
  authenticated data (a value copied to another key does not decrypt);
- `identity`: the plain value, no prefix.

`EncryptingBackend` wraps any `Backend`, so every reader (the watch caches, lists, watches from history) sees plain
values and every writer stores encrypted ones.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from harness.storage.backend import Backend, Event, Page, Record, RevisionMismatch, StorageError
from harness.util.files import UnreadableFile, read_yaml

PREFIX = b"k8s:enc:"


class EncryptionConfigError(Exception):
    """The encryption configuration cannot be used; the message names the file and the field."""


class DecryptError(StorageError):
    """A stored value no configured provider can read."""


class Provider(Protocol):
    name: str

    def encrypt(self, plain: bytes, key: str) -> bytes: ...

    def decrypt(self, stored: bytes, key: str) -> bytes | None:
        """The plain value, or None when this provider did not write it."""
        ...


class Identity:
    name = "identity"

    def encrypt(self, plain: bytes, key: str) -> bytes:
        return plain

    def decrypt(self, stored: bytes, key: str) -> bytes | None:
        return None if stored.startswith(PREFIX) else stored


@dataclass(frozen=True)
class _Key:
    name: str
    secret: bytes


class AESCBCProvider:
    name = "aescbc"

    def __init__(self, keys: list[_Key]) -> None:
        self.keys = keys

    def _prefix(self, key: _Key) -> bytes:
        return PREFIX + f"aescbc:v1:{key.name}:".encode()

    def encrypt(self, plain: bytes, key: str) -> bytes:
        first = self.keys[0]
        iv = os.urandom(16)
        padder = padding.PKCS7(128).padder()
        data = padder.update(plain) + padder.finalize()
        encryptor = Cipher(algorithms.AES(first.secret), modes.CBC(iv)).encryptor()
        return self._prefix(first) + iv + encryptor.update(data) + encryptor.finalize()

    def decrypt(self, stored: bytes, key: str) -> bytes | None:
        for k in self.keys:
            prefix = self._prefix(k)
            if stored.startswith(prefix):
                body = stored[len(prefix):]
                if len(body) < 32 or len(body) % 16:
                    raise DecryptError(f"{key}: the stored value is not an aescbc ciphertext")
                decryptor = Cipher(algorithms.AES(k.secret), modes.CBC(body[:16])).decryptor()
                data = decryptor.update(body[16:]) + decryptor.finalize()
                try:
                    unpadder = padding.PKCS7(128).unpadder()
                    return unpadder.update(data) + unpadder.finalize()
                except ValueError:
                    raise DecryptError(f"{key}: aescbc key {k.name} does not decrypt it") from None
        return None


class AESGCMProvider:
    name = "aesgcm"

    def __init__(self, keys: list[_Key]) -> None:
        self.keys = keys

    def _prefix(self, key: _Key) -> bytes:
        return PREFIX + f"aesgcm:v1:{key.name}:".encode()

    def encrypt(self, plain: bytes, key: str) -> bytes:
        first = self.keys[0]
        nonce = os.urandom(12)
        return self._prefix(first) + nonce + AESGCM(first.secret).encrypt(nonce, plain, key.encode())

    def decrypt(self, stored: bytes, key: str) -> bytes | None:
        for k in self.keys:
            prefix = self._prefix(k)
            if stored.startswith(prefix):
                body = stored[len(prefix):]
                try:
                    return AESGCM(k.secret).decrypt(body[:12], body[12:], key.encode())
                except Exception:  # InvalidTag, or a value too short to hold a nonce and tag
                    raise DecryptError(f"{key}: aesgcm key {k.name} does not decrypt it") from None
        return None


@dataclass(frozen=True)
class Rule:
    """Providers, in order, for the resources listed (`secrets`, `configmaps`, `*.apps`, `*.*`)."""

    resources: tuple[str, ...]
    providers: tuple[Provider, ...]

    def covers(self, resource: str, group: str) -> bool:
        qualified = f"{resource}.{group}" if group else resource
        return any(r in (qualified, "*.*") or (r.startswith("*.") and r[2:] == group) or (r == "*." and not group)
                   for r in self.resources)


def _keys(raw: Any, where: str) -> list[_Key]:
    keys = (raw or {}).get("keys") if isinstance(raw, dict) else None
    if not isinstance(keys, list) or not keys:
        raise EncryptionConfigError(f"{where}.keys: at least one key is required")
    out = []
    for i, k in enumerate(keys):
        if not isinstance(k, dict) or not k.get("name") or not k.get("secret"):
            raise EncryptionConfigError(f"{where}.keys[{i}]: want name and secret")
        try:
            secret = base64.b64decode(str(k["secret"]), validate=True)
        except binascii.Error:
            raise EncryptionConfigError(f"{where}.keys[{i}].secret: not base64") from None
        if len(secret) not in (16, 24, 32):
            raise EncryptionConfigError(f"{where}.keys[{i}].secret: the key must be 16, 24 or 32 bytes, not "
                                        f"{len(secret)}")
        out.append(_Key(str(k["name"]), secret))
    return out


def load_config(path: Path) -> list[Rule]:
    where = f"--encryption-provider-config {path}"
    try:
        doc = read_yaml(path)
    except UnreadableFile as exc:
        raise EncryptionConfigError(f"{where}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "EncryptionConfiguration":
        raise EncryptionConfigError(f"{where}: want kind EncryptionConfiguration (apiserver.config.k8s.io/v1)")
    rules = []
    for i, entry in enumerate(doc.get("resources") or []):
        at = f"{where}: resources[{i}]"
        names = entry.get("resources") if isinstance(entry, dict) else None
        if not isinstance(names, list) or not names:
            raise EncryptionConfigError(f"{at}.resources: at least one resource is required")
        providers: list[Provider] = []
        for j, raw in enumerate(entry.get("providers") or []):
            kind = next(iter(raw), "") if isinstance(raw, dict) and len(raw) == 1 else ""
            if kind == "identity":
                providers.append(Identity())
            elif kind == "aescbc":
                providers.append(AESCBCProvider(_keys(raw[kind], f"{at}.providers[{j}].aescbc")))
            elif kind == "aesgcm":
                providers.append(AESGCMProvider(_keys(raw[kind], f"{at}.providers[{j}].aesgcm")))
            else:
                raise EncryptionConfigError(f"{at}.providers[{j}]: {kind or raw!r} is not a provider harness has; "
                                            "use aescbc, aesgcm or identity")
        if not providers:
            raise EncryptionConfigError(f"{at}.providers: at least one provider is required")
        rules.append(Rule(tuple(str(n) for n in names), tuple(providers)))
    return rules


def _resource_of(key: str) -> tuple[str, str]:
    """(resource, group) of a /registry/<resource>/... key; plural names of grouped kinds are unique here."""
    parts = key.split("/")
    return (parts[2], "") if len(parts) > 2 and parts[1] == "registry" else ("", "")


class EncryptingBackend:
    """A `Backend` whose values for the configured resources are encrypted in the one beneath it."""

    def __init__(self, inner: Backend, rules: list[Rule], groups: dict[str, str] | None = None) -> None:
        self.inner = inner
        self.rules = rules
        #: resource plural -> API group, to match `*.apps`-style entries
        self.groups = groups or {}

    def _rule(self, key: str) -> Rule | None:
        resource, _ = _resource_of(key)
        group = self.groups.get(resource, "")
        return next((r for r in self.rules if resource and r.covers(resource, group)), None)

    def _write(self, key: str, value: bytes) -> bytes:
        rule = self._rule(key)
        return value if rule is None else rule.providers[0].encrypt(value, key)

    def _read(self, key: str, value: bytes) -> bytes:
        rule = self._rule(key)
        if rule is None:
            return value
        for provider in rule.providers:
            plain = provider.decrypt(value, key)
            if plain is not None:
                return plain
        raise DecryptError(f"{key}: no configured provider can read it (no matching prefix)")

    def _record(self, rec: Record | None) -> Record | None:
        if rec is None:
            return None
        return Record(rec.key, self._read(rec.key, rec.value), rec.revision, rec.create_revision)

    async def get(self, key: str) -> Record | None:
        return self._record(await self.inner.get(key))

    def _lenient(self, key: str, value: bytes) -> bytes:
        """For lists and watches: a value no provider reads is passed on as stored, for the reader to skip and
        report, so one unreadable key does not fail every read of its kind."""
        try:
            return self._read(key, value)
        except DecryptError:
            return value

    async def list(self, prefix: str, *, revision: int = 0, limit: int = 0, start: str = "") -> Page:
        page = await self.inner.list(prefix, revision=revision, limit=limit, start=start)
        return Page([Record(r.key, self._lenient(r.key, r.value), r.revision, r.create_revision)
                     for r in page.records], page.revision, page.more, page.remaining)

    async def count(self, prefix: str) -> int:
        return await self.inner.count(prefix)

    async def create(self, key: str, value: bytes, *, ttl: int = 0) -> int:
        return await self.inner.create(key, self._write(key, value), ttl=ttl)

    async def update(self, key: str, value: bytes, *, revision: int, ttl: int = 0) -> int:
        try:
            return await self.inner.update(key, self._write(key, value), revision=revision, ttl=ttl)
        except RevisionMismatch as exc:
            raise RevisionMismatch(key, self._record(exc.current)) from None

    async def delete(self, key: str, *, revision: int = 0) -> int:
        try:
            return await self.inner.delete(key, revision=revision)
        except RevisionMismatch as exc:
            raise RevisionMismatch(key, self._record(exc.current)) from None

    async def watch(self, prefix: str, *, revision: int) -> AsyncIterator[Event]:
        async for ev in self.inner.watch(prefix, revision=revision):
            prev = None if ev.prev_value is None else self._lenient(ev.key, ev.prev_value)
            yield Event(ev.type, ev.key, self._lenient(ev.key, ev.value), ev.revision, prev)

    async def current_revision(self) -> int:
        return await self.inner.current_revision()

    async def compact(self, revision: int) -> None:
        await self.inner.compact(revision)

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # connect() and whatever else the backend beneath offers
