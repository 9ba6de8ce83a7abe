"""`harness images`: list, import, export and remove the container images of this node's image store.

    harness images [list] [--root DIR]          a table like `crictl images` (the builtin busybox is always there)
    harness images import FILE [--ref REF]      import a `docker save` or OCI archive (`skopeo copy ... oci-archive:`)
    harness images export REF FILE              write an image as an OCI archive (that `docker load` takes too)
    harness images rm REF...                    remove references (an image goes with its last one) or ids

Errors go to stderr, one line each, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.kubelet.images.imagestore import DEFAULT_ROOT, Image, ImageStore
from harness.kubelet.images.refs import ImageError, split_for_display

PROG = "harness images"


def human_size(size: float) -> str:
    """Decimal units with three significant digits, as docker and crictl print sizes: 1.99MB, 512B, 12.3kB."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.3g}{unit}"
        size /= 1000
    raise AssertionError("unreachable")


def table(images: list[Image]) -> str:
    rows = [("IMAGE", "TAG", "IMAGE ID", "SIZE")]
    for image in images:
        for ref in image.refs or ("",):
            name, tag = split_for_display(ref) if ref else ("<none>", "<none>")
            rows.append((name, tag, image.short_id, human_size(image.size)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}   {r[1]:<{widths[1]}}   {r[2]:<{widths[2]}}   {r[3]}" for r in rows)


def add_arguments(p: argparse.ArgumentParser) -> None:
    root_help = f"the image store (default {DEFAULT_ROOT}, the kubelet's --root-dir/images)"
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=root_help)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, default=argparse.SUPPRESS, help=root_help)
    subs = p.add_subparsers(dest="images_action", metavar="ACTION")
    subs.add_parser("list", aliases=["ls"], parents=[common], help="list the images (the default action)")
    imp = subs.add_parser("import", parents=[common], help="import the images of a docker save or OCI archive")
    imp.add_argument("file", type=Path, help="the archive: `docker save` output or an OCI layout tar")
    imp.add_argument("--ref", help="also name the image REF (for an archive with one image and no name)")
    exp = subs.add_parser("export", parents=[common], help="write an image as an OCI archive")
    exp.add_argument("ref", help="the image: a reference or an id")
    exp.add_argument("file", type=Path, help="the archive to write")
    rm = subs.add_parser("rm", aliases=["rmi"], parents=[common], help="remove images by reference or id")
    rm.add_argument("refs", nargs="+", metavar="REF", help="a reference (busybox:1.35.0) or an id (prefix)")
    p.set_defaults(images_action="list")  # after add_subparsers, whose own default would win otherwise


def _error(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1


def _do_list(store: ImageStore) -> int:
    status = 0
    try:
        store.ensure_builtin()
    except (ImageError, OSError) as exc:
        status = _error(f"the builtin busybox image is not available: {exc}")
    print(table(store.list()))
    return status


def _do_import(store: ImageStore, file: Path, ref: str | None) -> int:
    if not file.exists():
        return _error(f"{file}: no such file (expected an image archive: `docker save` output or an OCI layout tar)")
    before = {ref: image.id for image in store.list() for ref in image.refs}
    for image in store.import_archive(file, ref=ref):
        size = human_size(image.size)
        new = [name for name in image.refs if before.get(name) != image.id]
        for name in new:
            print(f"imported {name} ({image.short_id}, {size})")
        if not new and image.refs:
            print(f"{image.short_id} ({size}) is already present as {', '.join(image.refs)}")
        elif not image.refs:
            print(f"imported {image.id} ({size}) without a name: the archive names none; "
                  "import it again with --ref NAME to use it in a pod")
    return 0


def _do_remove(store: ImageStore, refs: list[str]) -> int:
    status = 0
    for ref in refs:
        try:
            store.remove(ref)
        except ImageError as exc:
            status = _error(str(exc))
        else:
            print(f"Deleted: {ref}")
    return status


def run(args: argparse.Namespace) -> int:
    store = ImageStore(args.root)
    action = args.images_action
    try:
        if action in ("list", "ls"):
            return _do_list(store)
        if action == "import":
            return _do_import(store, args.file, args.ref)
        if action == "export":
            store.export_archive(args.ref, args.file)
            print(f"exported {args.ref} to {args.file}")
            return 0
        if action in ("rm", "rmi"):
            return _do_remove(store, args.refs)
    except ImageError as exc:
        return _error(str(exc))
    except PermissionError as exc:
        return _error(f"{exc.filename or args.root}: permission denied (run as root, or pass --root DIR)")
    except OSError as exc:
        return _error(f"{exc.filename or args.root}: {exc.strerror or exc}")
    return _error(f"unknown action {action!r}")
