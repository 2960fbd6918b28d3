"""Writing files and folders so that a crash, a kill or a power cut never leaves a
half-written one behind.

Both helpers write under a hidden temporary name beside the target
(``.<name>.tmp-<pid>-<random>``), flush and fsync what they wrote, rename it into place,
then fsync the parent folder so the rename itself is on disk. Readers see the old
version or the new one, never a mixture; on an error the temporary is removed and the
old version stays. A process killed mid-write leaves only its temporary, which
:func:`remove_partial` cleans up.

- :func:`atomic_write` / :func:`atomic_file`: one file (given its bytes, or a path to
  write it to, for writers that need one, such as ``torch.onnx.export``).
- :func:`atomic_folder`: a whole folder (a checkpoint, a saved model, a cache entry).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

TMP_MARK = ".tmp-"
# fsync of a folder is refused by some platforms and file systems; nothing to flush then
_NO_DIR_FSYNC = {errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EISDIR, errno.EACCES}


def temporary_path(path: str | Path, suffix: str = "") -> Path:
    """A unique hidden name beside ``path`` that names the writing process."""
    path = Path(path)
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex}{suffix}")


def fsync_file(path: str | Path) -> None:
    """Flush a written file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (a rename, a new file) to the disk, where supported."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # e.g. Windows cannot open a folder
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in _NO_DIR_FSYNC:
            raise
    finally:
        os.close(fd)


def fsync_tree(folder: str | Path) -> None:
    """fsync every file and folder under ``folder`` (deepest first), then ``folder``."""
    for root, _dirs, names in os.walk(folder, topdown=False):
        for name in names:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                fsync_file(path)
        fsync_dir(root)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


@contextlib.contextmanager
def atomic_file(path: str | Path, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write the file to; when the block ends
    without an error it is fsynced and renamed to ``path`` (replacing any old file), and
    the folder fsynced. On an error it is removed and ``path`` is left as it was.
    ``suffix`` ends the temporary name, for writers that look at the extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path, suffix)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically and durably (see
    :func:`atomic_file`): readers see the old file or the new one, never a partial one."""
    path = Path(path)
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        handle.flush()
    return path


@contextlib.contextmanager
def atomic_folder(path: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a new hidden temporary folder beside ``path`` to fill; when the block ends
    without an error every file in it is fsynced, it is renamed to ``path`` and the
    parent folder is fsynced. On an error (a full disk, a kill signal turned into an
    exception) it is removed and ``path`` is left as it was.

    An existing ``path`` is swapped out and deleted when ``replace`` is true; otherwise
    the rename fails (``OSError`` with ``EEXIST``/``ENOTEMPTY``) when another writer
    put a non-empty ``path`` there first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        if replace and (path.exists() or path.is_symlink()):
            old = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-old-{uuid.uuid4().hex}")
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                raise
            fsync_dir(path.parent)
            _remove(old)
        else:
            os.rename(tmp, path)
            fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def discard(path: str | Path) -> None:
    """Delete a file or folder by first renaming it to a hidden temporary (atomic), so a
    kill mid-delete leaves a temporary for :func:`remove_partial`, never a half-deleted
    folder under its real name."""
    path = Path(path)
    trash = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-trash-{uuid.uuid4().hex}")
    try:
        os.replace(path, trash)
    except OSError:
        trash = path
    _remove(trash)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def writer_pid(temporary: Path) -> int | None:
    """The id of the process that made a temporary of :func:`temporary_path`, else None."""
    try:
        return int(temporary.name.split(TMP_MARK, 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return None


def remove_partial(parent: str | Path, name: str = "*", *, only_dead: bool = True) -> list[Path]:
    """Remove the temporaries that killed writers left in ``parent`` for ``name`` (a glob;
    every name by default); returns what was removed.

    With ``only_dead`` (the default, for folders that several processes share) a
    temporary is kept while the process that made it is alive, or when it is this
    process's own; without it every temporary goes (a folder that one run owns, whose
    writer's process id may have been reused since, e.g. in a restarted container)."""
    removed = []
    for tmp in Path(parent).glob(f".{name}{TMP_MARK}*"):
        if only_dead:
            pid = writer_pid(tmp)
            if pid is None or pid == os.getpid() or _pid_alive(pid):
                continue
        _remove(tmp)
        removed.append(tmp)
    return removed
