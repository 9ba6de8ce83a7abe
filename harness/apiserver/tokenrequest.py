"""`serviceaccounts/<name>/token`: the TokenRequest API, which issues bound service-account tokens.

`kubectl create token`, the kubelet (for each pod's projected token volume) and the controller-manager (for each
controller's credentials) ask here. The request is checked as upstream checks it: a lifetime of at least ten
minutes, a bound object of a kind that can be bound and that exists with the uid given, a pod that runs as the
service account asked for.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from harness.api import errors, meta, registry
from harness.apiserver import codec
from harness.apiserver.admission import Attributes
from harness.apiserver.genericregistry import Store
from harness.apiserver.state import ApiServer
from harness.auth import serviceaccount as sa
from harness.auth.user import UserInfo
from harness.util.rfc3339 import format_time

GROUP = "authentication.k8s.io"
_BOUND_KINDS = {"Pod": registry.by_path("", "v1", "pods"), "Secret": registry.by_path("", "v1", "secrets"),
                "Node": registry.by_path("", "v1", "nodes")}


def _invalid(name: str, path: str, message: str, reason: str = "FieldValueInvalid") -> errors.ApiError:
    return errors.invalid("TokenRequest", name, [errors.Cause(reason, message, path)], group=GROUP)


def spec_of(request_obj: dict[str, Any], name: str, config_audiences: list[str], max_seconds: int) -> dict[str, Any]:
    """The request's spec with upstream's defaults, or a 422 naming the field that is wrong."""
    spec = dict(request_obj.get("spec") or {})
    audiences = spec.get("audiences") or list(config_audiences)
    if not isinstance(audiences, list) or not all(isinstance(a, str) and a for a in audiences):
        raise _invalid(name, "spec.audiences", "Invalid value: audiences must be non-empty strings")
    seconds = spec.get("expirationSeconds")
    if seconds is None:
        seconds = sa.DEFAULT_EXPIRATION_SECONDS
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise _invalid(name, "spec.expirationSeconds", f"Invalid value: {seconds!r}: must be an integer")
    if seconds < sa.MIN_EXPIRATION_SECONDS:
        raise _invalid(name, "spec.expirationSeconds",
                       f"Invalid value: {seconds}: may not specify a duration less than 10 minutes")
    if seconds > sa.MAX_EXPIRATION_SECONDS:
        raise _invalid(name, "spec.expirationSeconds",
                       f"Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds")
    if max_seconds and seconds > max_seconds:
        seconds = max_seconds
    spec["audiences"], spec["expirationSeconds"] = audiences, seconds
    ref = spec.get("boundObjectRef")
    if ref is not None:
        if not isinstance(ref, dict) or ref.get("kind") not in sa.BINDABLE_KINDS:
            kind = ref.get("kind") if isinstance(ref, dict) else ref
            raise _invalid(name, "spec.boundObjectRef.kind",
                           f'Unsupported value: "{kind}": supported values: "Pod", "Secret", "Node"',
                           "FieldValueNotSupported")
        if not ref.get("name"):
            raise _invalid(name, "spec.boundObjectRef.name", "Required value", "FieldValueRequired")
    return spec


async def create_token(request: web.Request, server: ApiServer, store: Store, ns: str, name: str,
                       user: UserInfo) -> web.StreamResponse:
    issuer = server.token_issuer
    if issuer is None:
        raise errors.NotFound("the server could not find the requested resource (serviceaccounts/token): this "
                              "apiserver has no --service-account-signing-key-file")
    body = await codec.read_body(request)
    asked = codec.decode_object(body, request.headers.get("Content-Type", ""), store.kind,
                                expect_kind="TokenRequest", expect_api_version=f"{GROUP}/v1")
    account = await store.get(ns, name)
    spec = spec_of(asked, name, server.config.api_audiences or [issuer.issuer],
                   server.config.service_account_max_token_expiration)
    bound = node = None
    ref = spec.get("boundObjectRef")
    pod: dict[str, Any] | None = None
    if ref is not None:
        kind = _BOUND_KINDS[ref["kind"]]
        obj = await server.stores[kind].get("" if kind.plural == "nodes" else ns, ref["name"])
        pod = obj if ref["kind"] == "Pod" else None
        uid = obj["metadata"].get("uid", "")
        if ref.get("uid") and ref["uid"] != uid:
            raise errors.Conflict(f"the UID in the bound object reference ({ref['uid']}) does not match the UID in "
                                  "record. The object might have been deleted and then recreated")
        if ref["kind"] == "Pod":
            runs_as = (obj.get("spec") or {}).get("serviceAccountName") or "default"
            if runs_as != name:
                raise errors.BadRequest(f'cannot bind token for serviceaccount "{name}" to pod running with '
                                        f'different serviceaccount name.')
            node_name = (obj.get("spec") or {}).get("nodeName")
            if node_name:
                node_obj = server.caches[_BOUND_KINDS["Node"]].objects.get(_BOUND_KINDS["Node"].key(None, node_name))
                node = sa.Bound("Node", node_name, (node_obj or {}).get("metadata", {}).get("uid", ""))
        bound = sa.Bound(ref["kind"], ref["name"], uid)
        spec["boundObjectRef"] = {**ref, "uid": uid, "apiVersion": ref.get("apiVersion") or "v1"}
    attrs = Attributes("CREATE", "TokenRequest", "serviceaccounts", "token", ns, name, {**asked, "spec": spec},
                       None, user, extra={"pod": pod})
    await server.chain.admit(attrs)
    await server.chain.validate(attrs)
    issued = issuer.issue(namespace=ns, service_account=account, audiences=spec["audiences"],
                          expiration_seconds=spec["expirationSeconds"], bound=bound, node=node)
    answer = {"kind": "TokenRequest", "apiVersion": f"{GROUP}/v1",
              "metadata": {"name": name, "namespace": ns, "creationTimestamp": meta.now_rfc3339()},
              "spec": spec,
              "status": {"token": issued.token, "expirationTimestamp": format_time(float(issued.expires))}}
    return codec.respond(answer, status=201)


class CacheLookup:
    """What a service-account token names, as the apiserver's watch caches have it (harness.auth's `Lookup`)."""

    KINDS = {"ServiceAccount": registry.by_path("", "v1", "serviceaccounts"), **_BOUND_KINDS}

    def __init__(self, caches: dict[registry.Kind, Any]) -> None:
        self.caches = caches

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        k = self.KINDS[kind]
        cache = self.caches.get(k)
        return None if cache is None else cache.objects.get(k.key(namespace or None, name))


def issuer_from(config: Any) -> sa.TokenIssuer | None:
    """The token issuer of `--service-account-signing-key-file` and the first `--service-account-issuer`."""
    if not config.service_account_signing_key_file:
        return None
    with open(config.service_account_signing_key_file, "rb") as f:
        key = sa.load_private_key(f.read())
    return sa.TokenIssuer(key, config.service_account_issuers[0] if config.service_account_issuers
                          else sa.DEFAULT_ISSUER)


def checker_from(config: Any, caches: dict[registry.Kind, Any]) -> sa.TokenAuthenticator | None:
    """The token checker of `--service-account-key-file` (default: the signing key's public half)."""
    files = list(config.service_account_key_files) or ([config.service_account_signing_key_file]
                                                       if config.service_account_signing_key_file else [])
    if not files:
        return None
    keys = []
    for path in files:
        with open(path, "rb") as f:
            keys += sa.load_public_keys(f.read())
    issuers = list(config.service_account_issuers) or [sa.DEFAULT_ISSUER]
    return sa.TokenAuthenticator(keys, issuers, config.api_audiences or [issuers[0]], CacheLookup(caches))
