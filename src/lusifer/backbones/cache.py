"""The on-disk cache of converted backbones, and an atomic, verified way to fill it.

A cache entry is a plain folder. It is built in a unique temporary folder next to its
final place, a manifest (every file's size and sha256, the format version, the source
package versions) is written into it, and only then is it renamed into place. A crash
mid-build therefore never leaves a final folder behind, and two processes building the
same entry at once cannot corrupt each other: the second waits on a lock file, and if it
got no lock it still builds privately and discards its copy when the other won.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

# absolute, not relative: tests load this module from its file alone
from lusifer.files import atomic_folder, discard, remove_partial

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "CacheError",
    "build_atomic",
    "cache_root",
    "check_manifest",
    "read_manifest",
    "write_manifest",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "lusifer-manifest.json"
_LOCK_SUFFIX = ".lock"


class CacheError(RuntimeError):
    """The cache cannot be written or read; the message says which folder and what to do."""


def cache_root() -> Path:
    """`$LUSIFER_CACHE`, else `$XDG_CACHE_HOME/lusifer`, else `~/.cache/lusifer`."""
    if env := os.environ.get("LUSIFER_CACHE"):
        return Path(env).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "lusifer"
    return Path.home() / ".cache" / "lusifer"


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _iter_files(folder: Path) -> Iterator[Path]:
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST_NAME:
            yield p


def write_manifest(
    folder: Path, *, name: str, sources: Mapping[str, str], extra: Mapping | None = None
) -> dict:
    """Record every file of `folder` (size, sha256) plus format/source versions."""
    files = {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in _iter_files(folder)
    }
    manifest = {
        "name": name,
        "format_version": FORMAT_VERSION,
        "sources": dict(sources),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
        **(dict(extra) if extra else {}),
    }
    path = folder / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    with path.open("rb") as f:
        os.fsync(f.fileno())
    return manifest


def read_manifest(folder: Path) -> dict | None:
    """The manifest of `folder`, or None when it is missing or not valid JSON."""
    try:
        return json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def check_manifest(
    folder: Path, *, sources: Mapping[str, str] | None = None, deep: bool = False
) -> list[str]:
    """Problems found in a cache entry; empty when it is usable.

    Checks the format version, the source package versions (when `sources` is given),
    and that every listed file exists with its recorded size (and sha256 when `deep`).
    """
    if not folder.is_dir():
        return [f"{folder} does not exist"]
    manifest = read_manifest(folder)
    if manifest is None:
        return [f"{folder / MANIFEST_NAME} is missing or unreadable"]
    problems: list[str] = []
    if manifest.get("format_version") != FORMAT_VERSION:
        problems.append(
            f"format version {manifest.get('format_version')!r} != current {FORMAT_VERSION}"
        )
    if sources is not None and dict(manifest.get("sources", {})) != dict(sources):
        problems.append(f"built from {manifest.get('sources')}, but installed now: {dict(sources)}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return [*problems, "manifest lists no files"]
    for rel, info in files.items():
        p = folder / rel
        if not p.is_file():
            problems.append(f"missing file {rel}")
        elif p.stat().st_size != info.get("size"):
            problems.append(f"{rel} has {p.stat().st_size} bytes, manifest says {info.get('size')}")
        elif deep and _sha256(p) != info.get("sha256"):
            problems.append(f"{rel} sha256 differs from the manifest")
    return problems


def _read_only_error(folder: Path, exc: OSError) -> CacheError:
    return CacheError(
        f"Cannot write the lusifer cache folder {folder} ({exc.strerror or exc}). "
        "Set LUSIFER_CACHE to a writable folder, e.g. `export LUSIFER_CACHE=/tmp/lusifer-cache`."
    )


def _no_space_error(folder: Path, required_bytes: int | None) -> CacheError:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    need = f"about {required_bytes / 1e9:.2f} GB" if required_bytes else "more space"
    have = f"; {free / 1e9:.2f} GB free" if free is not None else ""
    return CacheError(
        f"Not enough disk space to build into {folder}: need {need}{have}. "
        "Free some space there or set LUSIFER_CACHE to a folder on a larger disk."
    )


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[bool]:
    """Exclusive advisory lock; yields False (no lock, still safe) where unsupported."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield False
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def build_atomic(
    final_dir: Path,
    builder: Callable[[Path], None],
    *,
    name: str,
    sources: Mapping[str, str],
    required_bytes: int | None = None,
    extra_manifest: Mapping | None = None,
) -> Path:
    """Return `final_dir`, building it with `builder(tmp_dir)` unless a valid copy exists.

    An existing entry whose manifest check fails (missing or resized files, another
    format or source version) is rebuilt with a warning. The build happens in a unique
    temporary folder beside `final_dir` that is renamed into place only when complete.
    """
    final_dir = Path(final_dir)
    if not check_manifest(final_dir, sources=sources):
        return final_dir
    parent = final_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        if not os.access(parent, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "permission denied", str(parent))
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise _no_space_error(parent, required_bytes) from exc
        raise _read_only_error(parent, exc) from exc

    with _file_lock(parent / f".{final_dir.name}{_LOCK_SUFFIX}"):
        # Someone else may have finished while we waited for the lock.
        problems = check_manifest(final_dir, sources=sources)
        if not problems:
            return final_dir
        if final_dir.exists():
            warnings.warn(
                f"Rebuilding the cached backbone {final_dir}: " + "; ".join(problems),
                stacklevel=2,
            )
            discard(final_dir)  # renamed away first, then deleted
        remove_partial(parent, final_dir.name)  # left by crashed builders (pid gone)
        if required_bytes:
            free = shutil.disk_usage(parent).free
            if free < required_bytes:
                raise _no_space_error(parent, required_bytes)

        try:
            # renamed into place only when complete; a non-empty final_dir is not replaced
            with atomic_folder(final_dir, replace=False) as tmp:
                builder(tmp)
                for p in _iter_files(tmp):  # some writers use 0600 temp files; the cache is shared
                    p.chmod(p.stat().st_mode | 0o044)
                write_manifest(tmp, name=name, sources=sources, extra=extra_manifest)
        except OSError as exc:
            # A concurrent builder (without a working lock) won the race: keep theirs.
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) and not check_manifest(
                final_dir, sources=sources
            ):
                return final_dir
            if exc.errno == errno.ENOSPC:
                raise _no_space_error(parent, required_bytes) from exc
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise _read_only_error(parent, exc) from exc
            raise
    return final_dir
