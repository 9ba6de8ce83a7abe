"""The generic registry: REST semantics of one kind over the storage backend.

`Store` (upstream's generic registry Store) runs every verb of every kind the same way; what
differs per kind comes from tables (defaults, validation, `strategies.STRATEGIES`) and from
its `StoreOptions`, so this module names no kind. Writes are conditional on the revision that
was read, so concurrent writers never lose an update: a client-supplied stale resourceVersion
gets 409 Conflict; server-side read-modify-write (patch, scale, binding, deletion
bookkeeping) retries on a lost race instead.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import orjson

from harness.api import defaults, errors, meta, validation
from harness.api.registry import Kind
from harness.api.selectors import FieldSelector, LabelSelector
from harness.apiserver import strategies
from harness.apiserver.admission import Attributes, Chain
from harness.apiserver.listing import ListOptions, list_objects
from harness.apiserver.watchcache import WatchCache, decode
from harness.auth.user import UserInfo
from harness.storage.backend import Backend, KeyExists, KeyNotFound, Record, RevisionMismatch

#: Read-modify-write attempts before a server-side update gives up with 409.
MAX_RETRIES = 32

Mutation = Callable[[dict[str, Any]], dict[str, Any]]


class Claims(Protocol):
    """What a lifecycle claimed for one write: committed when the write lands, reverted when it fails."""

    async def commit(self) -> None: ...

    async def revert(self) -> None: ...


class Lifecycle(Protocol):
    """Kind-specific resources held by stored objects (a Service's cluster IP and node ports).

    `begin_create`/`begin_update` run after validation and may fill in what they allocate;
    `deleted` runs once the object is really gone from storage.
    """

    async def begin_create(self, obj: dict[str, Any], *, dry_run: bool = False) -> Claims: ...

    async def begin_update(self, new: dict[str, Any], old: dict[str, Any], *, dry_run: bool = False) -> Claims: ...

    async def deleted(self, obj: dict[str, Any]) -> None: ...


def encode(obj: dict[str, Any]) -> bytes:
    """The stored form of an object: its resourceVersion lives in etcd, not in the value."""
    md = obj.get("metadata") or {}
    if "resourceVersion" in md:
        obj = {**obj, "metadata": {k: v for k, v in md.items() if k != "resourceVersion"}}
    return orjson.dumps(obj)


@dataclass(frozen=True)
class StoreOptions:
    """How one kind's store is set up beyond its kind (upstream: what a kind's NewREST sets on its Store)."""

    #: Resources that stored objects hold (Services' cluster IPs and node ports); see `Lifecycle`.
    lifecycle: Lifecycle | None = None
    #: What validation depends on beyond the object (the Service node port range).
    validation_options: validation.Options = validation.DEFAULT_OPTIONS
    #: Seconds etcd keeps an object after its last write (0: forever): Events' --event-ttl.
    ttl: int = 0
    #: A check of each create and update after validation, which may refuse it (RBAC's escalation check).
    write_guard: Callable[[Attributes], None] | None = None


@dataclass
class DeleteOptions:
    grace_period_seconds: int | None = None
    propagation_policy: str = ""
    preconditions: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False

    @classmethod
    def from_body(cls, body: dict[str, Any] | None, query: dict[str, str]) -> DeleteOptions:
        body = body or {}
        grace = body.get("gracePeriodSeconds", query.get("gracePeriodSeconds"))
        policy = body.get("propagationPolicy") or query.get("propagationPolicy") or ""
        orphan = body.get("orphanDependents", query.get("orphanDependents"))
        if not policy and orphan in (True, "true"):
            policy = "Orphan"
        if policy and policy not in ("Orphan", "Background", "Foreground"):
            raise errors.BadRequest(f'propagationPolicy: Unsupported value: "{policy}": supported values: '
                                    '"Background", "Foreground", "Orphan"')
        try:
            grace_value = None if grace is None else int(grace)
        except (TypeError, ValueError):
            raise errors.BadRequest(f"gracePeriodSeconds: invalid value {grace!r}") from None
        dry = body.get("dryRun") or ([query["dryRun"]] if query.get("dryRun") else [])
        return cls(grace_value, policy, body.get("preconditions") or {}, "All" in dry)


class Store:
    """One kind's verbs over the backend, complete when made: the kind, its strategy, its options."""

    def __init__(self, kind: Kind, backend: Backend, cache: WatchCache, chain: Chain, *,
                 options: StoreOptions = StoreOptions()) -> None:
        self.kind = kind
        self.backend = backend
        self.cache = cache
        self.chain = chain
        self.strategy = strategies.strategy_for(kind)
        self.lifecycle = options.lifecycle
        self.validation_options = options.validation_options
        self.ttl = options.ttl
        self.write_guard = options.write_guard

    # -- helpers -------------------------------------------------------------------------

    def not_found(self, name: str) -> errors.NotFound:
        return errors.NotFound(f'{self.kind.resource} "{name}" not found', kind=self.kind.plural,
                               name=name, group=self.kind.group)

    def conflict(self, name: str, why: str = "") -> errors.Conflict:
        why = why or "the object has been modified; please apply your changes to the latest version and try again"
        return errors.Conflict(f'Operation cannot be fulfilled on {self.kind.resource} "{name}": {why}',
                               kind=self.kind.plural, name=name, group=self.kind.group)

    async def _read(self, namespace: str, name: str) -> tuple[dict[str, Any], Record]:
        rec = await self.backend.get(self.kind.key(namespace, name))
        if rec is None:
            raise self.not_found(name)
        return decode(rec.value, rec.revision), rec

    def _attrs(self, op: str, namespace: str, name: str, obj: dict[str, Any] | None,
               old: dict[str, Any] | None, user: UserInfo, subresource: str = "",
               dry_run: bool = False) -> Attributes:
        return Attributes(op, self.kind.kind, self.kind.plural, subresource, namespace, name, obj, old,
                          user, dry_run)

    # -- reads ---------------------------------------------------------------------------

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        return (await self._read(namespace, name))[0]

    async def list(self, namespace: str, opts: ListOptions) -> dict[str, Any]:
        return await list_objects(self.kind, self.backend, self.cache, namespace, opts)

    # -- create --------------------------------------------------------------------------

    async def create(self, namespace: str, obj: dict[str, Any], *, user: UserInfo,
                     dry_run: bool = False) -> dict[str, Any]:
        md = meta.metadata(obj)
        if self.kind.namespaced and md.get("namespace") and md["namespace"] != namespace:
            raise errors.BadRequest("the namespace of the provided object does not match the namespace sent "
                                    "on the request")
        generated = not md.get("name") and bool(md.get("generateName"))
        defaults.apply_defaults(self.kind, obj)
        strategies.prepare_for_create(self.kind, obj, namespace=namespace)
        self.strategy.prepare_create_by(obj, user)
        attrs = self._attrs("CREATE", namespace, md.get("name") or "", obj, None, user, dry_run=dry_run)
        await self.chain.admit(attrs)
        validation.validate_create(self.kind, obj, options=self.validation_options)
        await self.chain.validate(attrs)
        if self.write_guard is not None:
            self.write_guard(attrs)
        if self.lifecycle is not None and not generated and \
                await self.backend.get(self.kind.key(namespace, md["name"])) is not None:
            # An object that exists is a 409, not a 422 from allocating what it already holds.
            raise errors.AlreadyExists(f'{self.kind.resource} "{md["name"]}" already exists', kind=self.kind.plural,
                                       name=md["name"], group=self.kind.group)
        claims = await self.lifecycle.begin_create(obj, dry_run=dry_run) if self.lifecycle else None
        if dry_run:
            return obj
        revision = await _settle(claims, self._create(namespace, obj, generated))
        md["resourceVersion"] = str(revision)
        return obj

    async def _create(self, namespace: str, obj: dict[str, Any], generated: bool) -> int:
        md = obj["metadata"]
        # A generated name that happens to be taken gets another try, as upstream retries.
        for attempt in range(3 if generated else 1):
            try:
                return await self.backend.create(self.kind.key(namespace, md["name"]), encode(obj), ttl=self.ttl)
            except KeyExists:
                if attempt == (2 if generated else 0):
                    raise errors.AlreadyExists(f'{self.kind.resource} "{md["name"]}" already exists',
                                               kind=self.kind.plural, name=md["name"],
                                               group=self.kind.group) from None
                md["name"] = meta.generate_name(md["generateName"])
        raise AssertionError("unreachable")

    # -- update --------------------------------------------------------------------------

    async def update(self, namespace: str, name: str, obj: dict[str, Any], *, user: UserInfo,
                     subresource: str = "", dry_run: bool = False) -> dict[str, Any]:
        """PUT: replace the object; a resourceVersion in the body must be the current one."""
        body_name = meta.name_of(obj)
        if body_name and body_name != name:
            raise errors.BadRequest(f"the name of the object ({body_name}) does not match the name on the URL "
                                    f"({name})")
        if self.kind.namespaced and meta.namespace_of(obj) and meta.namespace_of(obj) != namespace:
            raise errors.BadRequest("the namespace of the provided object does not match the namespace sent "
                                    "on the request")
        wanted = meta.resource_version_of(obj)
        old, rec = await self._read(namespace, name)
        if wanted and wanted != str(rec.revision):
            raise self.conflict(name)
        try:
            return await self._write_update(namespace, name, obj, old, rec, user=user,
                                            subresource=subresource, dry_run=dry_run)
        except RevisionMismatch:
            raise self.conflict(name) from None

    async def guaranteed_update(self, namespace: str, name: str, mutate: Mutation, *, user: UserInfo,
                                subresource: str = "", dry_run: bool = False,
                                precondition_rv: str = "") -> dict[str, Any]:
        """Read, mutate, write; retry when another writer won the race (no client RV given)."""
        for _ in range(MAX_RETRIES):
            old, rec = await self._read(namespace, name)
            if precondition_rv and precondition_rv != str(rec.revision):
                raise self.conflict(name)
            new = mutate(copy.deepcopy(old))
            try:
                return await self._write_update(namespace, name, new, old, rec, user=user,
                                                subresource=subresource, dry_run=dry_run)
            except RevisionMismatch:
                if precondition_rv:
                    raise self.conflict(name) from None
        raise self.conflict(name, "too many concurrent updates; try again")

    async def _write_update(self, namespace: str, name: str, new: dict[str, Any], old: dict[str, Any],
                            rec: Record, *, user: UserInfo, subresource: str, dry_run: bool) -> dict[str, Any]:
        strategies.prepare_for_update(self.kind, new, old, subresource=subresource)
        if not subresource:
            defaults.apply_defaults(self.kind, new)
        attrs = self._attrs("UPDATE", namespace, name, new, old, user, subresource, dry_run)
        await self.chain.admit(attrs)
        if subresource and subresource != "binding":
            validation.validate_subresource_update(self.kind, subresource, new, old, options=self.validation_options)
        elif not subresource:
            validation.validate_update(self.kind, new, old, options=self.validation_options)
        await self.chain.validate(attrs)
        if self.write_guard is not None:
            self.write_guard(attrs)
        claims = None
        if self.lifecycle is not None and not subresource:
            claims = await self.lifecycle.begin_update(new, old, dry_run=dry_run)
        meta.metadata(new)["resourceVersion"] = str(rec.revision)
        if new == old or dry_run:
            if claims is not None:
                await claims.revert()
            return new
        gone = self._finished_terminating(new)
        write = self.backend.delete(rec.key, revision=rec.revision) if gone else \
            self.backend.update(rec.key, encode(new), revision=rec.revision, ttl=self.ttl)
        revision = await _settle(claims, write)
        if gone and self.lifecycle is not None:
            await self.lifecycle.deleted(new)
            await self.lifecycle.deleted(old)
        meta.metadata(new)["resourceVersion"] = str(revision)
        return new

    def _finished_terminating(self, obj: dict[str, Any]) -> bool:
        """A deleted object whose last finalizer is gone and whose grace has run out goes for good."""
        md = obj.get("metadata", {})
        if not md.get("deletionTimestamp") or md.get("finalizers") or self.strategy.kind_finalizers(obj):
            return False
        return not md.get("deletionGracePeriodSeconds")

    # -- delete --------------------------------------------------------------------------

    async def delete(self, namespace: str, name: str, opts: DeleteOptions, *,
                     user: UserInfo) -> tuple[dict[str, Any], bool]:
        """Delete now, or start a graceful/finalized deletion. Returns (object, deleted now)."""
        for _ in range(MAX_RETRIES):
            obj, rec = await self._read(namespace, name)
            self._check_preconditions(name, obj, opts.preconditions)
            attrs = self._attrs("DELETE", namespace, name, None, obj, user, dry_run=opts.dry_run)
            await self.chain.admit(attrs)
            await self.chain.validate(attrs)
            new = self._mark_deleted(obj, opts)
            try:
                if new is None:
                    if not opts.dry_run:
                        revision = await self.backend.delete(rec.key, revision=rec.revision)
                        meta.metadata(obj)["resourceVersion"] = str(revision)
                        if self.lifecycle is not None:
                            await self.lifecycle.deleted(obj)
                    return obj, True
                if new == obj or opts.dry_run:
                    return new, False
                revision = await self.backend.update(rec.key, encode(new), revision=rec.revision, ttl=self.ttl)
                meta.metadata(new)["resourceVersion"] = str(revision)
                return new, False
            except (RevisionMismatch, KeyNotFound):
                continue
        raise self.conflict(name, "too many concurrent updates; try again")

    def _check_preconditions(self, name: str, obj: dict[str, Any], pre: dict[str, Any]) -> None:
        md = obj["metadata"]
        if pre.get("uid") and pre["uid"] != md.get("uid"):
            raise self.conflict(name, f"Precondition failed: UID in precondition: {pre['uid']}, UID in object "
                                      f"meta: {md.get('uid')}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != md.get("resourceVersion"):
            raise self.conflict(name, f"Precondition failed: ResourceVersion in precondition: "
                                      f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                      f"{md.get('resourceVersion')}")

    def _mark_deleted(self, obj: dict[str, Any], opts: DeleteOptions) -> dict[str, Any] | None:
        """The object as it must be stored while deletion is pending, or None to delete now."""
        md = obj["metadata"]
        grace = self.strategy.grace_period(obj, opts.grace_period_seconds)
        finalizers = list(md.get("finalizers") or [])
        terminating = bool(md.get("deletionTimestamp"))
        if not terminating:
            wanted = {"Orphan": "orphan", "Foreground": "foregroundDeletion"}.get(opts.propagation_policy)
            if wanted and wanted not in finalizers:
                finalizers.append(wanted)
        if not finalizers and not self.strategy.kind_finalizers(obj) and grace == 0:
            return None
        new = copy.deepcopy(obj)
        new_md = new["metadata"]
        if terminating:
            current = md.get("deletionGracePeriodSeconds") or 0
            if grace < current:  # a shorter grace period may cut a graceful deletion short
                new_md["deletionTimestamp"] = meta.format_time(meta.now() + timedelta(seconds=grace))
                new_md["deletionGracePeriodSeconds"] = grace
            return new
        new_md["deletionTimestamp"] = meta.format_time(meta.now() + timedelta(seconds=grace))
        new_md["deletionGracePeriodSeconds"] = grace
        if finalizers:
            new_md["finalizers"] = finalizers
        if self.kind.tracks_generation and md.get("generation") is not None:
            new_md["generation"] = int(md["generation"]) + 1
        self.strategy.mark_terminating(new)
        return new

    async def delete_collection(self, namespace: str, opts: ListOptions, delete_opts: DeleteOptions, *,
                                user: UserInfo) -> dict[str, Any]:
        listed = await self.list(namespace, ListOptions(label_selector=opts.label_selector,
                                                        field_selector=opts.field_selector))
        deleted = []
        for item in listed["items"]:
            try:
                obj, _ = await self.delete(meta.namespace_of(item), meta.name_of(item), delete_opts, user=user)
                deleted.append(obj)
            except errors.NotFound:
                continue
        return {"kind": self.kind.list_kind, "apiVersion": self.kind.api_version,
                "metadata": {"resourceVersion": listed["metadata"]["resourceVersion"]}, "items": deleted}

    def deleted_status(self, obj: dict[str, Any]) -> dict[str, Any]:
        md = obj.get("metadata", {})
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": md.get("name", ""), "group": self.kind.group, "kind": self.kind.plural,
                            "uid": md.get("uid", "")}}


__all__ = ["Claims", "DeleteOptions", "FieldSelector", "LabelSelector", "Lifecycle", "ListOptions", "Store",
           "StoreOptions", "encode"]


async def _settle(claims: Claims | None, write: Awaitable[int]) -> int:
    """Run the storage write; keep what was claimed for it if it succeeds, give it back if not."""
    try:
        revision = await write
    except BaseException:
        if claims is not None:
            await claims.revert()
        raise
    if claims is not None:
        await claims.commit()
    return revision
