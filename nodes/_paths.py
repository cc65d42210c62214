"""Every file or folder path a node resolves from a prompt: inputs, output targets, input-folder listings.

A ComfyUI server is often shared or exposed, and a prompt is untrusted text. So a node input resolves only inside
ComfyUI's input / output / temp folders (model files go through ``_common.resolve_model``):

* names are relative to the input folder, or to the output / temp folder with ComfyUI's ``[output]`` /
  ``[temp]`` annotation; ``folder_paths.get_annotated_filepath`` builds the path (today's ComfyUI refuses names
  whose real path leaves the folder with ``ValueError: Invalid file path``, which we reword);
* the *real* path (symlinks resolved) must stay inside the folder's real path, so a symlink dropped into
  ``input/`` cannot reach ``/etc``;
* a missing file and a refused one give the same message, so a prompt cannot probe which files exist;
* absolute paths are refused unless the server's owner sets the environment variable
  ``E4D_ALLOW_ABSOLUTE_PATHS=1`` (off by default; for single-user local installs; see SECURITY.md).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Literal

ALLOW_ABSOLUTE_ENV = "E4D_ALLOW_ABSOLUTE_PATHS"
"""Environment variable that, set to 1/true/yes, lets node inputs name absolute paths (off by default)."""

MAX_NAME_BYTES = 200
"""Longest file/folder name part of a ``filename_prefix`` in UTF-8 bytes: file systems allow 255 and the counter,
suffix and temporary-file decoration need the rest."""

MAX_PREFIX_CHARS = 1024
"""Longest whole ``filename_prefix`` (sub-folders included)."""

Kind = Literal["file", "dir", "any"]


class NodePathError(FileNotFoundError):
    """A node input names a path that is missing, of the wrong kind, or outside ComfyUI's folders (one error for
    all three, on purpose)."""


def absolute_paths_allowed() -> bool:
    """True when the server's owner opted in to absolute paths in node inputs (``E4D_ALLOW_ABSOLUTE_PATHS=1``)."""
    return os.environ.get(ALLOW_ABSOLUTE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _refusal(what: str, name: str, kind: Kind) -> NodePathError:
    noun = {"file": "file", "dir": "folder", "any": "file or folder"}[kind]
    return NodePathError(
        f"Efficient4D: {what} {name!r} not found: it must be a {noun} inside ComfyUI's input folder (or the "
        f"output/temp folder with a ' [output]' / ' [temp]' suffix). Put it into ComfyUI's input folder (or upload "
        f"it) and pick it by its name there. Absolute paths, '..' and links leaving those folders are refused "
        f"unless the server's owner sets {ALLOW_ABSOLUTE_ENV}=1 (see SECURITY.md).")


def _inside(real: str, root: str) -> bool:
    try:
        return os.path.commonpath([real, root]) == root
    except ValueError:  # different drives (Windows)
        return False


def _kind_ok(path: str, kind: Kind) -> bool:
    if kind == "file":
        return os.path.isfile(path)
    if kind == "dir":
        return os.path.isdir(path)
    return os.path.exists(path)


def input_path(name: str, kind: Kind = "any", what: str = "input") -> Path:
    """Resolve a node's path widget (``file.mp4``, ``folder/``, ``file.mp4 [output]``) to a real path inside
    ComfyUI's input / output / temp folder.

    Args:
        name: the widget value.
        kind: "file", "dir" or "any": what must exist there.
        what: the input's name for the message (e.g. "video").

    Returns:
        The real path (symlinks resolved), so what is opened is what was checked.

    Raises:
        NodePathError: (a FileNotFoundError) one message, whether the path is missing, of the wrong kind, absolute,
        or leaves the folder (``..``, symlinks) — a prompt cannot tell them apart.
    """
    import folder_paths

    raw = str(name or "").strip()
    if not raw:
        raise _refusal(what, raw, kind)
    if os.path.isabs(raw):
        if absolute_paths_allowed() and _kind_ok(raw, kind):
            return Path(os.path.realpath(raw))
        raise _refusal(what, raw, kind)
    rel, base = folder_paths.annotated_filepath(raw)
    base = base if base is not None else folder_paths.get_input_directory()
    rel = rel.strip().rstrip("/\\")
    if not rel or os.path.isabs(rel):
        raise _refusal(what, raw, kind)
    try:  # today's ComfyUI refuses escapes itself ("Invalid file path"); 0.3.x does not, so check either way
        full = folder_paths.get_annotated_filepath(raw)
    except (ValueError, OSError) as e:
        raise _refusal(what, raw, kind) from e
    real = os.path.realpath(full)
    if not _inside(real, os.path.realpath(base)) or not _kind_ok(real, kind):
        raise _refusal(what, raw, kind)
    return Path(real)


def input_files(extensions: Iterable[str], with_dirs: bool = False) -> list[str]:
    """Files (relative names) in ComfyUI's input folder with one of ``extensions``; optionally sub-folders too.

    Entries whose real path leaves the input folder (symlinks to elsewhere) are not listed: they would be refused.
    """
    import folder_paths

    base = folder_paths.get_input_directory()
    root = os.path.realpath(base)
    exts = {e.lower() for e in extensions}
    out: list[str] = []
    if os.path.isdir(base):
        for entry in sorted(os.listdir(base)):
            full = os.path.join(base, entry)
            if entry.startswith(".") or not _inside(os.path.realpath(full), root):
                continue
            if os.path.isfile(full) and os.path.splitext(entry)[1].lower() in exts:
                out.append(entry)
            elif with_dirs and os.path.isdir(full):
                out.append(entry + "/")
    return out


def check_filename_prefix(filename_prefix: str) -> str:
    """The prefix, stripped, or a ValueError naming the rule: not empty, no hidden (dot) name, parts of at most
    :data:`MAX_NAME_BYTES` bytes, at most :data:`MAX_PREFIX_CHARS` characters, relative."""
    prefix = str(filename_prefix or "").strip()
    example = "e.g. 'efficient4d/object'"
    if not prefix:
        raise ValueError(f"filename_prefix is empty; give a name, {example}")
    if len(prefix) > MAX_PREFIX_CHARS:
        raise ValueError(f"filename_prefix has {len(prefix)} characters; at most {MAX_PREFIX_CHARS} are allowed, "
                         f"{example}")
    if os.path.isabs(prefix):
        raise ValueError(f"filename_prefix {prefix!r} is absolute; give a name inside the output folder, {example}")
    parts = [p for p in prefix.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or prefix.endswith(("/", "\\")):
        raise ValueError(f"filename_prefix {prefix!r} names a folder but no file name; add one, {example}")
    last = parts[-1]
    if last.startswith("."):
        raise ValueError(f"filename_prefix {prefix!r} would write hidden files (name starts with '.'); {example}")
    for p in parts:
        if len(p.encode("utf-8")) > MAX_NAME_BYTES:
            raise ValueError(f"filename_prefix part {p[:40]!r}... is {len(p.encode('utf-8'))} bytes long; at most "
                             f"{MAX_NAME_BYTES} are allowed per name, {example}")
    return prefix


def output_target(filename_prefix: str, width: int = 0, height: int = 0) -> tuple[Path, str, int, str]:
    """ComfyUI's save-path helper: ``(folder, base name, counter, subfolder)`` inside the output folder.

    Honours ``%date%``-style prefixes and sub-folders like ``4d/run``; refuses empty, hidden, over-long prefixes
    and paths leaving the output folder (also through a symlinked sub-folder) with a ValueError naming the rule.
    """
    import folder_paths

    prefix = check_filename_prefix(filename_prefix)
    out_dir = folder_paths.get_output_directory()
    try:
        folder, base, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, out_dir, width, height)
    except Exception as e:  # ComfyUI raises a bare Exception for prefixes leaving the output folder
        raise ValueError(f"filename_prefix {prefix!r} leaves ComfyUI's output folder; give a name inside it, e.g. "
                         "'efficient4d/object'") from e
    if not _inside(os.path.realpath(folder), os.path.realpath(out_dir)):
        raise ValueError(f"filename_prefix {prefix!r} leads through a link out of ComfyUI's output folder; "
                         "give a name inside it")
    check_filename_prefix(base)  # %date% expansion may have changed the name
    return Path(folder), base, counter, subfolder
