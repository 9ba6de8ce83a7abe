"""LIST: from the watch cache or from etcd, with selectors, `limit` and `continue`.

`resourceVersion=0` (what informers send) is answered from the watch cache. Anything else
is a consistent read from etcd: every page of a paginated list is read at the revision of
the first page, carried in the continue token, so the pages together are one snapshot
even while writes happen. A token whose revision etcd has compacted answers 410 Expired.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

from harness.api import errors
from harness.api.registry import Kind
from harness.api.selectors import FieldSelector, LabelSelector
from harness.apiserver.watchcache import WatchCache, decode, readable
from harness.storage.backend import Backend, Compacted


@dataclass
class ListOptions:
    label_selector: LabelSelector | None = None
    field_selector: FieldSelector | None = None
    limit: int = 0
    continue_token: str = ""
    resource_version: str = ""
    resource_version_match: str = ""

    def predicate(self) -> Any:
        """A function telling whether an object passes both selectors (None if no selector)."""
        ls, fs = self.label_selector, self.field_selector
        if ls is not None and ls.empty:
            ls = None
        if ls is None and fs is None:
            return None

        def matches(obj: dict[str, Any]) -> bool:
            if ls is not None and not ls.matches((obj.get("metadata") or {}).get("labels")):
                return False
            return fs is None or fs.matches(obj)

        return matches


def encode_continue(revision: int, start: str) -> str:
    raw = orjson.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": start})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = orjson.loads(raw)
        revision, start = int(data["rv"]), str(data["start"])
    except (binascii.Error, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        raise errors.BadRequest("continue key is not valid: the continue token could not be decoded") from None
    if data.get("v") != "meta.k8s.io/v1" or revision <= 0 or "\x00" in start.rstrip("\x00"):
        raise errors.BadRequest("continue key is not valid: incorrect encoded start resourceVersion")
    return revision, start


def _list(kind: Kind, items: list[dict[str, Any]], revision: int, token: str = "",
          remaining: int | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {"resourceVersion": str(revision)}
    if token:
        md["continue"] = token
    if remaining:
        md["remainingItemCount"] = remaining
    return {"kind": kind.list_kind, "apiVersion": kind.api_version, "metadata": md, "items": items}


def _parse_revision(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise errors.BadRequest(f'invalid resourceVersion "{text}": must be an integer') from None
    if value < 0:
        raise errors.BadRequest(f'invalid resourceVersion "{text}": must not be negative')
    return value


async def list_objects(kind: Kind, backend: Backend, cache: WatchCache, namespace: str,
                       opts: ListOptions) -> dict[str, Any]:
    predicate = opts.predicate()
    if opts.resource_version == "0" and not opts.continue_token:
        items, revision = cache.list(namespace=namespace, predicate=predicate)
        return _list(kind, items, revision)
    if opts.resource_version_match and opts.resource_version_match not in ("Exact", "NotOlderThan"):
        raise errors.BadRequest(f'resourceVersionMatch: Unsupported value: "{opts.resource_version_match}"')
    prefix = kind.key_prefix(namespace)
    name = opts.field_selector.exact("metadata.name") if opts.field_selector else None
    if name is not None and not opts.continue_token and (namespace or not kind.namespaced):
        return await _list_one(kind, backend, namespace, name, predicate)
    revision, start = 0, prefix
    if opts.continue_token:
        revision, suffix = decode_continue(opts.continue_token)
        start = prefix + suffix
    elif opts.resource_version and opts.resource_version_match == "Exact":
        revision = _parse_revision(opts.resource_version)
    return await _read_pages(kind, backend, prefix, start, revision, opts.limit, predicate)


async def _list_one(kind: Kind, backend: Backend, namespace: str, name: str, predicate: Any) -> dict[str, Any]:
    rec = await backend.get(kind.key(namespace, name))
    revision = await backend.current_revision()
    items = []
    if rec is not None:
        obj = decode(rec.value, rec.revision)
        if predicate is None or predicate(obj):
            items.append(obj)
    return _list(kind, items, revision)


async def _read_pages(kind: Kind, backend: Backend, prefix: str, start: str, revision: int, limit: int,
                      predicate: Any) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    # With a selector, read bigger pages and keep going until `limit` objects matched.
    chunk = 0 if not limit else (limit if predicate is None else max(limit, 500))
    while True:
        try:
            page = await backend.list(prefix, revision=revision, limit=chunk, start=start)
        except Compacted:
            raise errors.Gone("The provided continue parameter is too old to display a consistent list "
                              "result. You can start a new list without the continue parameter.") from None
        revision = page.revision
        for n, rec in enumerate(page.records):
            obj = readable(rec.key, rec.value, rec.revision)
            if obj is not None and (predicate is None or predicate(obj)):
                items.append(obj)
                if limit and len(items) == limit:
                    more = page.more or n + 1 < len(page.records)
                    if not more:
                        return _list(kind, items, revision)
                    token = encode_continue(revision, rec.key[len(prefix):] + "\x00")
                    remaining = None
                    if predicate is None:
                        remaining = page.remaining + len(page.records) - n - 1
                    return _list(kind, items, revision, token, remaining)
        if not page.more or not page.records:
            return _list(kind, items, revision)
        start = page.records[-1].key + "\x00"
