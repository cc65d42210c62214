"""How the command line reports failures: one line naming the file, the rule and the fix, exit code 2 for user
errors (bad input files, unwritable or full outputs), 130 for Ctrl-C; only programming errors keep a traceback.

Outputs are written atomically (:mod:`e4d.atomic`), so an error or an interrupt leaves nothing under the final
names.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Optional

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

_FIXES = {
    errno.EACCES: "the folder is not writable (or the file not readable) for this user; fix its permissions or "
                  "choose another path",
    errno.EPERM: "the operation is not permitted here; fix the permissions or choose another path",
    errno.EROFS: "the file system is read-only; write to another folder",
    errno.ENOSPC: "the disk is full; free some space or write to another disk",
    errno.EDQUOT: "the disk quota is exhausted; free some space or write elsewhere",
    errno.EFBIG: "the file-size limit was reached (see `ulimit -f`); raise it or write smaller outputs",
    errno.ENAMETOOLONG: "the name is too long for the file system; choose a shorter path",
    errno.EISDIR: "a folder is in the way; give a file name",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EEXIST: "something is in the way; choose another path or remove it",
    errno.ENOENT: "check the path",
}


def user_error_message(e: BaseException) -> Optional[str]:
    """The one-line message for a user error, or None when ``e`` is a programming error (keep the traceback).

    User errors are ValueError (bad values and malformed files, including JSON errors) and OSError (missing,
    unreadable or unwritable files, full disk, file-size limit, read-only file system).
    """
    if isinstance(e, OSError) and e.errno is not None:
        where = f"{e.filename}: " if e.filename else ""
        text = f"{where}{e.strerror or e}"
        fix = _FIXES.get(e.errno)
        msg = f"{text}; {fix}" if fix else text
    elif isinstance(e, (OSError, ValueError)):
        msg = str(e) or type(e).__name__
    else:
        return None
    return " ".join(msg.split())  # one line


def check_out_target(command: str, out: Optional[Path], kind: str) -> None:
    """Refuse an ``--out`` that cannot be written before any work is done (ValueError naming the rule and fix).

    ``kind``: "file" (fit, render: an existing folder is in the way) or "folder" (export, demo, run: an existing
    file is in the way; an existing folder is replaced as a whole when the command finishes).
    """
    if out is None:
        return
    out = Path(out)
    if kind == "file" and out.is_dir():
        raise ValueError(f"--out {out} is an existing folder; {command} writes a file: give a file name")
    if kind == "folder" and out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is an existing file; {command} writes a folder: give a folder name")
    parent = out.parent if str(out.parent) else Path(".")
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"--out {out}: {parent} is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: the folder {parent} is not writable (read-only or no permission); choose "
                         "another folder")
