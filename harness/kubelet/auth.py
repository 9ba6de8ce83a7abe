"""Who may use the kubelet API (:10250), as upstream's kubelet decides with `--authentication-token-webhook` and
`--authorization-mode=Webhook` (harness.machinery.delegatedauth does the asking).

Every request is a verb on the subresource of this node its path names: `nodes/proxy` for exec, container logs and
port-forward, `nodes/metrics`, `nodes/pods`, `nodes/log`, `nodes/stats`, `nodes/healthz`; a refusal is upstream's
`Forbidden (user=..., verb=..., resource=nodes, subresource=...)`.
"""

from __future__ import annotations

from aiohttp import web

from harness.auth.user import UserInfo
from harness.machinery.delegatedauth import METHOD_VERBS, DelegatedAuth, Question, Reviewer

#: Path prefixes and the node subresource they are authorized as; anything else is `proxy`.
_SUBRESOURCES = (("/stats", "stats"), ("/metrics", "metrics"), ("/logs", "log"), ("/pods", "pods"),
                 ("/healthz", "healthz"), ("/configz", "configz"), ("/checkpoint", "checkpoint"))


def attributes(method: str, path: str) -> tuple[str, str]:
    """(verb, node subresource) of a kubelet API request, as upstream's kubelet names them."""
    verb = METHOD_VERBS.get(method.upper(), method.lower())
    for prefix, subresource in _SUBRESOURCES:
        if path == prefix or path.startswith(prefix + "/"):
            return verb, subresource
    return verb, "proxy"


def kubelet_auth(reviewer: Reviewer, node_name: str, *, anonymous: bool, tokens: bool,
                 webhook_authorization: bool) -> DelegatedAuth:
    def question(method: str, path: str) -> Question:
        verb, subresource = attributes(method, path)
        return Question(verb, (("version", "v1"), ("resource", "nodes"), ("subresource", subresource),
                               ("name", node_name)))

    def refusal(user: UserInfo, asked: Question) -> web.Response:
        subresource = dict(asked.resource).get("subresource", "")
        return web.Response(status=403, text=f"Forbidden (user={user.name}, verb={asked.verb}, resource=nodes, "
                                             f"subresource={subresource})")

    return DelegatedAuth(reviewer, question=question, refusal=refusal, anonymous=anonymous, tokens=tokens,
                         webhook_authorization=webhook_authorization)
