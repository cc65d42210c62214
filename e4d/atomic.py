"""Atomic file and folder writes: a failed or cancelled export never leaves a half-written file.

Temporary names start with ``.`` and sit beside the target, so a crash leaves at most a hidden temporary, never a
partial file under the final name. The finished file or folder gets the permissions a plain ``open()`` /
``mkdir()`` would have given it (``0666`` / ``0777`` minus the process umask), not the private ``0600`` / ``0700``
of ``tempfile``: a web server or another user may need to read ComfyUI's outputs.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read from /proc on Linux; elsewhere set-and-restore under a lock)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _publish_mode(path: Path, is_dir: bool) -> None:
    os.chmod(path, (0o777 if is_dir else 0o666) & ~current_umask())


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on error removed.

    The temporary name keeps the final suffix so writers that dispatch on it (PIL, OpenCV) still work. The final
    file has mode ``0666 & ~umask``.

    Raises:
        IsADirectoryError: ``path`` is an existing folder (it is never replaced by a file).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name for the output")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _publish_mode(tmp_path, is_dir=False)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it takes the place of ``path``, on error it is deleted.

    With ``overwrite=True`` an existing folder is replaced as a whole: it is renamed aside, the new folder renamed
    in, then the old one deleted, so ``path`` never holds a mix of the old and new contents (a second export with
    fewer frames leaves no stale files). The final folder has mode ``0777 & ~umask``.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False, or ``path`` is an existing file.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} is an existing file, not a folder; give a folder name for the output")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another folder or pass overwrite=True")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        _publish_mode(tmp, is_dir=True)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old)  # a directory onto an empty directory: allowed by rename(2)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)  # put the previous export back
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
