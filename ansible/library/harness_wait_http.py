#!/usr/bin/python3
"""Ansible module: wait until every URL answers HTTP 200, in one remote call (the health waits of the roles)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: harness_wait_http
short_description: Wait until every URL answers with HTTP 200
description:
  - Polls each URL from the target until all of them answered 200, or fails after C(timeout) seconds saying what
    each URL answered last. One module run for any number of URLs (a C(uri) loop costs one run per try and URL).
options:
  urls:
    description: The URLs to wait for.
    type: list
    elements: str
    required: true
  timeout:
    description: Seconds to wait in all.
    type: float
    default: 60
  interval:
    description: Seconds between rounds.
    type: float
    default: 0.5
  ca_file:
    description: The CA that https URLs' certificates must chain to (the cluster CA); empty for the system's.
    type: str
    default: ""
author: harness
"""

EXAMPLES = r"""
- name: Wait for the apiserver and the scheduler
  harness_wait_http:
    urls: [http://192.168.56.10:6443/readyz, http://192.168.56.10:10259/healthz]
    timeout: 60
"""

RETURN = r"""
status:
  description: The last answer of each URL (an HTTP status code, or the connection error).
  returned: always
  type: dict
elapsed:
  description: Seconds waited.
  returned: always
  type: float
"""

import ssl  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402


def probe(url: str, context: ssl.SSLContext | None = None) -> int | str:
    try:
        with urllib.request.urlopen(url, timeout=3, context=context) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "urls": {"type": "list", "elements": "str", "required": True},
            "timeout": {"type": "float", "default": 60.0},
            "interval": {"type": "float", "default": 0.5},
            "ca_file": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    urls: list[str] = module.params["urls"]
    context = ssl.create_default_context(cafile=module.params["ca_file"] or None)
    started = time.monotonic()
    status: dict[str, int | str] = {}
    while True:
        status.update({url: probe(url, context) for url in urls if status.get(url) != 200})
        elapsed = round(time.monotonic() - started, 2)
        if all(code == 200 for code in status.values()):
            module.exit_json(changed=False, status=status, elapsed=elapsed)
        if elapsed >= module.params["timeout"]:
            waiting = ", ".join(f"{url} -> {code}" for url, code in status.items() if code != 200)
            module.fail_json(msg=f"not healthy after {elapsed:.0f}s: {waiting}", status=status, elapsed=elapsed)
        time.sleep(module.params["interval"])


if __name__ == "__main__":
    main()
