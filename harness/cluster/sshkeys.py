"""SSH key pairs for a cluster: ed25519, no passphrase, made with `ssh-keygen` when absent."""

from __future__ import annotations

import subprocess
from pathlib import Path


class SSHKeyError(Exception):
    """ssh-keygen failed."""


def ensure_keypair(private_key: Path, comment: str = "harness") -> Path:
    """Create `private_key` (and `<private_key>.pub`) unless both exist; return the private key's path."""
    public_key = private_key.with_name(private_key.name + ".pub")
    if private_key.exists() and public_key.exists():
        return private_key
    private_key.parent.mkdir(parents=True, exist_ok=True)
    private_key.unlink(missing_ok=True)
    public_key.unlink(missing_ok=True)
    done = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private_key)],
                          capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SSHKeyError(f"ssh-keygen for {private_key} failed: {done.stderr.strip()}")
    private_key.chmod(0o600)
    return private_key


def public_key(private_key: Path) -> str:
    """The one-line public key of `private_key`."""
    return private_key.with_name(private_key.name + ".pub").read_text().strip()
