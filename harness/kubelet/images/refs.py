"""Image references: parse and normalize them the way docker and containerd do.

`normalize_ref("busybox")` is `"docker.io/library/busybox:latest"`; `"foo/bar:1"` is `"docker.io/foo/bar:1"`;
`"registry:5000/x"` is `"registry:5000/x:latest"`; a digest (`x@sha256:...`) is kept, and a reference with a digest
gets no default tag. The grammar is the one of distribution's `reference` package: lowercase path components
separated by `/`, an optional domain first (a first component with a `.` or a `:`, or `localhost`, or with
capitals), a tag of up to 128 word characters, a digest `algorithm:hex`.

Also home of `ImageError`, the base of every error of the image store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.kubelet.errors import KubeletError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class ImageError(KubeletError):
    """Base of every error of the image store: bad references, bad archives, missing images."""


class InvalidReference(ImageError):
    """A string that is not an image reference; the message is worded like containerd's."""

    def __init__(self, ref: str, detail: str = "") -> None:
        message = f'couldn\'t parse image name "{ref}": invalid reference format'
        if detail:
            message += f": {detail}"
        super().__init__(message)
        self.ref = ref
        self.message = message


@dataclass(frozen=True)
class Reference:
    """A parsed, normalized reference: `domain/path[:tag][@digest]`."""

    domain: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """The repository, e.g. `docker.io/library/busybox`."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The repository as people write it: `busybox`, `foo/bar`, `registry:5000/x`."""
        if self.domain == DEFAULT_DOMAIN:
            return self.path.removeprefix(OFFICIAL_PREFIX)
        return self.name

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse_ref(ref: str) -> Reference:
    """Parse and normalize `ref`; raise `InvalidReference` when it is not a valid image reference."""
    if not ref or ref != ref.strip():
        raise InvalidReference(ref)
    remainder, digest = ref, None
    if "@" in remainder:
        remainder, _, digest = remainder.partition("@")
        if not _DIGEST.fullmatch(digest):
            raise InvalidReference(ref, f"bad digest {digest!r}")
        algorithm, _, hex_part = digest.partition(":")
        if algorithm == "sha256" and not _HEX64.fullmatch(hex_part):
            raise InvalidReference(ref, "a sha256 digest has 64 lowercase hex digits")
    tag = None
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > slash:
        remainder, tag = remainder[:colon], remainder[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise InvalidReference(ref, f"bad tag {tag!r}")
    if not remainder:
        raise InvalidReference(ref)
    first, sep, rest = remainder.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        domain, path = first, rest
        if not _DOMAIN.fullmatch(domain):
            raise InvalidReference(ref, f"bad registry host {domain!r}")
    else:
        domain, path = DEFAULT_DOMAIN, remainder
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    if path.lower() != path:
        raise InvalidReference(ref, f"repository name ({path}) must be lowercase")
    if not _PATH.fullmatch(path):
        raise InvalidReference(ref, f"bad repository name {path!r}")
    if len(domain) + 1 + len(path) > NAME_MAX:
        raise InvalidReference(ref, f"repository name is longer than {NAME_MAX} characters")
    if domain == DEFAULT_DOMAIN and _HEX64.fullmatch(path.removeprefix(OFFICIAL_PREFIX)):
        raise InvalidReference(ref, "a repository name cannot be a 64-character hexadecimal string")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def normalize_ref(ref: str) -> str:
    """The fully qualified form of `ref` (domain, repository, tag or digest); `InvalidReference` if it is not one."""
    return str(parse_ref(ref))


def is_valid_ref(ref: str) -> bool:
    try:
        parse_ref(ref)
    except InvalidReference:
        return False
    return True


def split_for_display(ref: str) -> tuple[str, str]:
    """(IMAGE, TAG) columns the way `crictl images` shows a reference: tag `<none>` for digest-only refs."""
    try:
        parsed = parse_ref(ref)
    except InvalidReference:
        return ref, "<none>"
    return parsed.name, parsed.tag or "<none>"


__all__ = ["ImageError", "InvalidReference", "Reference", "is_valid_ref", "normalize_ref", "parse_ref",
           "split_for_display"]
