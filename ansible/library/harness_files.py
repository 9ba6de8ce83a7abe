#!/usr/bin/python3
"""Ansible module: put many small files (a machine's certificates and keys) in place in one remote call."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: harness_files
short_description: Write many small files and their directories in one run
description:
  - Writes each file whose content or mode differs, atomically (a temporary file renamed over it), owner root, and
    creates missing directories with the given mode. One module run for all of a machine's certificates, where a
    C(copy) loop costs several round trips per file.
options:
  directory:
    description: Where the files go; created with C(directory_mode) if missing.
    type: path
    required: true
  files:
    description: The files, each with C(dest) (a path under C(directory)) and C(mode) (octal text); other keys are
      ignored.
    type: list
    elements: dict
    required: true
  contents:
    description: Each file's content, in the order of C(files).
    type: list
    elements: str
    required: true
  directory_mode:
    description: The mode of directories this module creates, and of those that hold the files.
    type: str
    default: "0700"
author: harness
"""

EXAMPLES = r"""
- name: Place the certificates
  harness_files:
    directory: /etc/harness/pki
    files: [{dest: ca.crt, mode: "0644"}]
    contents: ["{{ lookup('file', 'pki/ca.crt', rstrip=false) }}"]
  no_log: true
"""

RETURN = r"""
written:
  description: The files written (new, or changed in content or mode).
  returned: always
  type: list
"""

import os  # noqa: E402
import tempfile  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402


def ensure_dir(path: str, mode: int, check: bool, *, fix_mode: bool = True) -> bool:
    """Create the directory (and missing parents) with `mode`; give an existing one `mode` only if `fix_mode` (the
    directories that hold the files, never an existing parent such as /etc)."""
    if not os.path.isdir(path):
        ensure_dir(os.path.dirname(path), mode, check, fix_mode=False)
        if not check:
            os.mkdir(path, mode)
            os.chmod(path, mode)  # mkdir's mode is narrowed by the umask
        return True
    if fix_mode and (os.stat(path).st_mode & 0o7777) != mode:
        if not check:
            os.chmod(path, mode)
        return True
    return False


def write(path: str, data: bytes, mode: int, check: bool) -> bool:
    try:
        with open(path, "rb") as f:
            same = f.read() == data and (os.stat(path).st_mode & 0o7777) == mode and os.stat(path).st_uid == 0
    except FileNotFoundError:
        same = False
    if same or check:
        return not same
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.chown(tmp, 0, 0)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def target(base: str, dest: str) -> str:
    """The file's path: `dest` under `base`, refused if it is absolute or leaves `base`."""
    path = os.path.normpath(os.path.join(base, dest))
    if not dest or os.path.isabs(dest) or not path.startswith(base + os.sep):
        raise ValueError(f"{dest!r} is not a relative path under {base}")
    return path


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "directory": {"type": "path", "required": True},
            "files": {"type": "list", "elements": "dict", "required": True},
            "contents": {"type": "list", "elements": "str", "required": True, "no_log": True},
            "directory_mode": {"type": "str", "default": "0700"},
        },
        supports_check_mode=True,
    )
    files, contents = module.params["files"], module.params["contents"]
    if len(files) != len(contents):
        module.fail_json(msg=f"{len(files)} files but {len(contents)} contents")
    check = module.check_mode
    dir_mode = int(module.params["directory_mode"], 8)
    written: list[str] = []
    base = os.path.abspath(module.params["directory"])
    changed = ensure_dir(base, dir_mode, check)
    for spec, content in zip(files, contents, strict=True):
        dest, mode = str(spec.get("dest") or ""), spec.get("mode")
        try:
            path = target(base, dest)
        except ValueError as exc:
            module.fail_json(msg=f"each file needs a relative dest under {base}: {exc}")
        if not mode:
            module.fail_json(msg=f"{dest}: no mode")
        changed |= ensure_dir(os.path.dirname(path), dir_mode, check)
        if write(path, content.encode(), int(str(mode), 8), check):
            written.append(path)
    module.exit_json(changed=changed or bool(written), written=written)


if __name__ == "__main__":
    main()
