"""Where a user-given path or fsspec URL really points, and whether it stays inside a root.

fsspec opens a bare path, a ``file://`` URL, a ``memory://`` or ``s3://`` URL and an
``a::b`` chain of them differently. ``relative_inside`` reads a value the way
``fsspec.core.url_to_fs`` will (the same chain splitting and protocol stripping, without
creating a filesystem), normalises ``..`` away (and, for local paths, symbolic links), and
answers with the value's place relative to the root, or refuses it.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.core import _un_chain, split_protocol
from fsspec.implementations.chained import ChainedFileSystem

LOCAL = "file"


class PathRefusedError(ValueError):
    """A path that is malformed, uses a protocol this server refuses, or leaves its root.

    The message is meant for the client: it never names a server path.
    """


@dataclass(frozen=True)
class _Link:
    """One link of an fsspec chain: its filesystem's canonical protocol, the normalised path
    it opens, the options its URL carries (a host, a port), and whether it only wraps the
    next link (a cache)."""

    protocol: str
    path: str
    options: dict[str, Any]
    wrapper: bool


def is_relative(value: str) -> bool:
    """True for a plain relative path: no protocol, no ``::`` chain, no leading ``/``."""
    return "::" not in value and split_protocol(value)[0] is None and not value.startswith("/")


def normalised_relative(value: str) -> str:
    """``value`` as a normalised relative POSIX path (``.`` for the folder itself).

    Raises ``PathRefusedError`` if it is not relative or climbs out with ``..``.
    """
    if not is_relative(value) or "\x00" in value:
        raise PathRefusedError("must be a relative path")
    relative = posixpath.normpath(value)
    if relative == ".." or relative.startswith("../"):
        raise PathRefusedError("must not leave its folder with '..'")
    return relative


def relative_inside(value: str, root: str, chain_protocols: frozenset[str] = frozenset()) -> str:
    """The place ``value`` names, as a POSIX path relative to ``root`` (``.`` for the root).

    A relative ``value`` is taken relative to ``root``. A chained URL (``a::b``) is refused
    unless every protocol in it is the root's or in ``chain_protocols``; then every link's
    path must lie inside the root, the last link must be on the root's filesystem, and the
    links before it may only wrap it (caches). Raises ``PathRefusedError`` with a reason for the
    client.
    """
    if "\x00" in value:
        raise PathRefusedError("must not contain NUL characters")
    if is_relative(value):
        value = f"{root.rstrip('/')}/{normalised_relative(value)}"
    (base,) = _links(root, frozenset())
    links = _links(value, chain_protocols | {base.protocol})
    last = links[-1]
    if last.protocol != base.protocol or last.options != base.options:
        raise PathRefusedError("must lie on the storage root's filesystem")
    for link in links[:-1]:
        if not link.wrapper:
            raise PathRefusedError(
                f"a chain may only wrap the storage ({link.protocol!r} does not)"
            )
    for link in links:
        if link.path and not _within(link.path, base.path):
            raise PathRefusedError("leaves its root")
    return posixpath.relpath(last.path, base.path)


def _links(value: str, chain_protocols: frozenset[str]) -> list[_Link]:
    """The chain ``value`` opens, outermost first, each path normalised."""
    chained = "::" in value
    try:
        chain = _un_chain(value, {})
    except (ImportError, ValueError) as error:
        raise PathRefusedError("uses a protocol this server cannot open") from error
    links = []
    for path, protocol, options in chain:
        try:
            cls = fsspec.get_filesystem_class(protocol)
        except (ImportError, ValueError) as error:
            raise PathRefusedError("uses a protocol this server cannot open") from error
        names = (cls.protocol,) if isinstance(cls.protocol, str) else tuple(cls.protocol)
        canonical = LOCAL if LOCAL in names else names[0]
        if chained and not (chain_protocols & {protocol, *names}):
            raise PathRefusedError(
                "chained URLs ('a::b') are refused unless the operator allows their protocols "
                "(SPARSETRAIN_STORAGE_PROTOCOLS)"
            )
        links.append(
            _Link(
                protocol=canonical,
                path=_normalise(path, local=canonical == LOCAL),
                options=dict(options),
                wrapper=issubclass(cls, ChainedFileSystem),
            )
        )
    return links


def _normalise(path: str, *, local: bool) -> str:
    if not local:
        return posixpath.normpath(path) if path else path
    try:
        return os.path.realpath(os.path.abspath(path))
    except ValueError as error:  # an embedded NUL, say
        raise PathRefusedError("is not a valid path") from error


def _within(path: str, root: str) -> bool:
    if root in ("/", ""):
        return not path.startswith("..")
    return path == root or path.startswith(root.rstrip("/") + "/")
