"""The certificate controllers, as upstream's: `csrapproving` approves a kubelet's request for its client
certificate when SubjectAccessReview says its requester may make one (`certificatesigningrequests/nodeclient`, or
`selfnodeclient` for a node renewing its own); `csrsigning` issues the certificates of approved requests to
Kubernetes' signers with the cluster CA (--cluster-signing-cert-file, --cluster-signing-key-file), or marks a
request Failed when the signer refuses it; `csrcleaner` removes requests that are done with (approved, denied or
failed an hour ago, pending for a day, or whose certificate has expired)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
from pathlib import Path
from typing import Any

from cryptography import x509 as cx509

from harness.api import certificates as certs
from harness.api import errors, meta, registry
from harness.controllers.base import Controller
from harness.util import csr, rfc3339, x509

log = logging.getLogger(__name__)

CSRS = registry.by_path("certificates.k8s.io", "v1", "certificatesigningrequests")
SUBJECT_ACCESS_REVIEWS = registry.by_path("authorization.k8s.io", "v1", "subjectaccessreviews")
#: The signers csrsigning issues for (legacy-unknown is only for the old v1beta1 API).
SIGNERS = (certs.KUBE_APISERVER_CLIENT, certs.KUBE_APISERVER_CLIENT_KUBELET, certs.KUBELET_SERVING)
AUTO_APPROVED = "Auto approving kubelet client certificate after SubjectAccessReview."
#: csrcleaner's ages (upstream's): done requests go after an hour, pending ones after a day.
DONE_AGE, PENDING_AGE = dt.timedelta(hours=1), dt.timedelta(hours=24)


def _condition(ctype: str, reason: str, message: str) -> dict[str, Any]:
    now = meta.now_rfc3339()
    return {"type": ctype, "status": "True", "reason": reason, "message": message, "lastUpdateTime": now,
            "lastTransitionTime": now}


def _done(obj: dict[str, Any]) -> bool:
    return any(certs.has_condition(obj, t) for t in (certs.DENIED, certs.FAILED))


class CSRApprovingController(Controller):
    name = "csrapproving"
    event_source = "certificatesigningrequest-approving-controller"

    def setup(self) -> None:
        self.ctx.informers(CSRS).add_handlers(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new))

    async def reconcile(self, key: str) -> None:
        obj = self.ctx.informers(CSRS).cache.get(key)
        if obj is None or certs.has_condition(obj, certs.APPROVED) or _done(obj):
            return
        try:
            request = certs.parse_request(obj)
        except certs.RequestError:
            return
        if not certs.is_node_client(obj, request):
            return
        subresource = "selfnodeclient" if certs.is_self_node_client(obj, request) else "nodeclient"
        if not await self._allowed(obj, subresource) and not (
                subresource == "selfnodeclient" and await self._allowed(obj, "nodeclient")):
            return
        approved = {**obj, "status": {**(obj.get("status") or {}), "conditions": [
            *certs.conditions(obj), _condition(certs.APPROVED, "AutoApproved", AUTO_APPROVED)]}}
        with contextlib.suppress(errors.NotFound, errors.Conflict):
            await self.ctx.client.update(CSRS, approved, subresource="approval")
            log.info("csrapproving: approved %s for %s", key, (obj.get("spec") or {}).get("username"))

    async def _allowed(self, obj: dict[str, Any], subresource: str) -> bool:
        spec = obj.get("spec") or {}
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
            "user": spec.get("username", ""), "uid": spec.get("uid", ""), "groups": spec.get("groups") or [],
            "extra": spec.get("extra") or {},
            "resourceAttributes": {"group": certs.GROUP, "resource": "certificatesigningrequests",
                                   "verb": "create", "subresource": subresource}}}
        answer = await self.ctx.client.create(SUBJECT_ACCESS_REVIEWS, review)
        return bool((answer.get("status") or {}).get("allowed"))


class CSRSigningController(Controller):
    name = "csrsigning"
    event_source = "certificatesigningrequest-signing-controller"

    def setup(self) -> None:
        opts = self.ctx.options
        self.ca: x509.Issued | None = None
        if not (opts.cluster_signing_cert_file and opts.cluster_signing_key_file):
            log.info("csrsigning: no --cluster-signing-cert-file/--cluster-signing-key-file, nothing is signed")
            return
        self.ca = x509.load(Path(opts.cluster_signing_cert_file), Path(opts.cluster_signing_key_file))
        self.ctx.informers(CSRS).add_handlers(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new))

    async def reconcile(self, key: str) -> None:
        obj = self.ctx.informers(CSRS).cache.get(key)
        if self.ca is None or obj is None or not certs.has_condition(obj, certs.APPROVED) or _done(obj) \
                or certs.certificate(obj):
            return
        spec = obj.get("spec") or {}
        signer = spec.get("signerName", "")
        if signer not in SIGNERS:
            return
        usages = list(spec.get("usages") or [])
        try:
            request = certs.parse_request(obj)
            error = certs.signer_error(signer, request, usages)
        except certs.RequestError as exc:
            error = str(exc)
        status = dict(obj.get("status") or {})
        if error:
            status["conditions"] = [*certs.conditions(obj), _condition(certs.FAILED, "SignerValidationFailure",
                                                                        error)]
        else:
            seconds = int(self.ctx.options.cluster_signing_duration)
            if isinstance(spec.get("expirationSeconds"), int):
                seconds = min(seconds, spec["expirationSeconds"])
            pem = csr.sign(self.ca, request, usages, seconds=seconds)
            status["certificate"] = base64.b64encode(pem).decode()
        with contextlib.suppress(errors.NotFound, errors.Conflict):
            await self.ctx.client.update(CSRS, {**obj, "status": status}, subresource="status")
            log.info("csrsigning: %s %s", "failed" if error else "issued a certificate for", key)


def should_remove(obj: dict[str, Any], now: dt.datetime) -> bool:
    """csrcleaner's rule: done (approved, denied, failed) over an hour ago, pending over a day, or issued with a
    certificate that has expired."""
    created = _time(meta.metadata(obj).get("creationTimestamp"))
    pem = certs.certificate_pem(obj)
    if pem:
        with contextlib.suppress(ValueError):
            issued = cx509.load_pem_x509_certificate(pem)
            if issued.not_valid_after_utc < now:
                return True
    for ctype in (certs.APPROVED, certs.DENIED, certs.FAILED):
        condition = next((c for c in certs.conditions(obj) if c.get("type") == ctype), None)
        if condition is not None:
            when = _time(condition.get("lastUpdateTime")) or created
            return when is not None and now - when > DONE_AGE
    return created is not None and now - created > PENDING_AGE


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return rfc3339.parse_time(value)
    except ValueError:
        return None


class CSRCleanerController(Controller):
    name = "csrcleaner"
    #: Seconds between looks at every request (upstream: an hour; the ages above are what matters).
    interval = 300.0

    def setup(self) -> None:
        self.ctx.informers(CSRS)

    async def run(self) -> None:
        while True:
            now = dt.datetime.now(dt.UTC)
            for obj in self.ctx.informers(CSRS).cache.list():
                if should_remove(obj, now):
                    with contextlib.suppress(errors.NotFound, errors.Conflict):
                        await self.ctx.client.delete(CSRS, meta.name_of(obj))
                        log.info("csrcleaner: removed %s", meta.name_of(obj))
            await asyncio.sleep(self.interval)

    async def reconcile(self, key: str) -> None:
        return None
