"""The one checkpoint reader of the pack: tensors only, nothing from the file is ever executed.

Formats, by what the file is (never by its name alone):

* ``.safetensors``: memory-mapped (``safe_open``); only the keys that pass ``keep`` are read.
* a torch zip or legacy pickle (``.ckpt``/``.pt``/``.pth``/``.pkl``/``.bin``): ``torch.load(weights_only=True)``,
  memory-mapped when the zip format allows it (the 5 GB SyncDreamer checkpoint then loads without a full copy).
* a Lightning checkpoint whose metadata (hyper-parameter objects, callbacks) ``weights_only`` refuses: re-read
  with a restricted unpickler that rebuilds tensors only and turns every other object into an inert placeholder.
* a TorchScript archive (OpenAI's ``ViT-L-14.pt``): its pickled module tree is read with the same restricted
  unpickler and flattened to ``state_dict``-style names; no TorchScript code is loaded.

Wrapper dicts (``state_dict``, ``model``, ``params``) are unwrapped; non-tensor values are dropped.
"""
from __future__ import annotations

import logging
import pickle
import types
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

log = logging.getLogger(__name__)

KeyFilter = Callable[[str], bool]
WRAPPERS = ("state_dict", "model", "params")
"""Keys under which trainers nest the weights (Lightning ``state_dict``, some RIFE releases ``model``/``params``)."""
_ALLOWED_BUILTINS = {("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
                     ("builtins", "slice"), ("builtins", "complex"), ("builtins", "bytearray")}
_TORCH_DTYPES = ("float16", "float32", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")


class _Placeholder:
    """Stand-in for every non-tensor class in a checkpoint: it records the pickled state (so tensors nested in a
    TorchScript module tree stay reachable) and never runs anything."""

    def __init__(self, *args, **kwargs) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args, **kwargs) -> "_Placeholder":
        return _Placeholder()


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only torch's tensor-rebuild functions, storages, dtypes and plain containers."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_BUILTINS:
            return super().find_class(module, name)
        if module in ("torch._utils", "torch") and (name.startswith("_rebuild") or name.endswith("Storage")
                                                    or name in ("Size", "device", "dtype")):
            return super().find_class(module, name)
        if module == "torch" and name in _TORCH_DTYPES:
            return super().find_class(module, name)
        return _Placeholder


def _restricted_pickle_module() -> types.ModuleType:
    mod = types.ModuleType("e4d_restricted_pickle")
    mod.Unpickler = _RestrictedUnpickler
    mod.load = lambda f, **kw: _RestrictedUnpickler(f, **kw).load()
    return mod


def _torchscript_prefix(path: Path) -> Optional[str]:
    """The archive folder of a TorchScript zip (it holds ``constants.pkl``), else None."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as z:
        for n in z.namelist():
            if n.endswith("/constants.pkl"):
                return n[: -len("constants.pkl")]
    return None


def _read_torchscript(path: Path, prefix: str) -> dict[str, Tensor]:
    """Tensors of a TorchScript archive's module tree, named like ``state_dict()`` (``visual.conv1.weight``)."""
    with zipfile.ZipFile(path) as z:
        storages: dict[str, Any] = {}

        class Unpickler(_RestrictedUnpickler):
            def persistent_load(self, pid):
                _, storage_type, key, _location, numel = pid
                if key not in storages:
                    dtype = torch.uint8 if storage_type is torch.UntypedStorage else storage_type.dtype
                    raw = torch.UntypedStorage.from_buffer(bytearray(z.read(f"{prefix}data/{key}")), dtype=torch.uint8)
                    storages[key] = torch.storage.TypedStorage(wrap_storage=raw, dtype=dtype, _internal=True)
                return storages[key]

        with z.open(f"{prefix}data.pkl") as f:
            root = Unpickler(f).load()
    out: dict[str, Tensor] = {}

    def walk(obj: Any, name: str) -> None:
        if isinstance(obj, Tensor):
            out[name] = obj
        elif isinstance(obj, _Placeholder):
            walk(obj.state, name)
        elif isinstance(obj, dict):
            for k, v in obj.items():
                if isinstance(k, str):
                    walk(v, f"{name}.{k}" if name else k)

    walk(root, "")
    return out


def _torch_load(path: Path, restricted_pickle: Any = None) -> Any:
    """``torch.load`` on the CPU, memory-mapped when the file is a zip archive (legacy pickles cannot be).

    ``weights_only=True`` unless ``restricted_pickle`` (our tensor-only unpickler) is given: then torch's own
    allow-list is replaced by that stricter one, never by plain pickle."""
    kw = ({"weights_only": True} if restricted_pickle is None
          else {"weights_only": False, "pickle_module": restricted_pickle})
    try:
        return torch.load(str(path), map_location="cpu", mmap=True, **kw)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise
        return torch.load(str(path), map_location="cpu", **kw)


def _read_pickled(path: Path, hint: str) -> tuple[Any, str]:
    """The unpickled object and, when ``weights_only`` refused the file, its reason ("" otherwise)."""
    try:
        return _torch_load(path), ""
    except pickle.UnpicklingError as e:
        refused = str(e)
    except Exception as e:  # noqa: BLE001 -- any reader failure means an unusable file; re-raised with context
        raise ValueError(f"cannot read {path} as a tensor-only torch checkpoint (torch.load weights_only=True: "
                         f"{type(e).__name__}: {str(e)[:300]}); the file is corrupt, truncated or not a PyTorch "
                         f"checkpoint{hint}") from e
    # Lightning metadata (hparams objects) or any other pickled object: rebuild tensors only, nothing runs
    # (tests/test_syncdreamer_model.py proves a malicious __reduce__ is not executed).
    log.info("%s: objects refused by weights_only=True; reading its tensors only", path.name)
    try:
        obj = _torch_load(path, _restricted_pickle_module())
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"cannot read {path}: torch.load(weights_only=True) refused it ({refused[:200]}) and the "
                         f"tensor-only reader failed ({type(e).__name__}: {str(e)[:200]}); the file is corrupt, "
                         f"truncated or not a PyTorch checkpoint{hint}") from e
    return obj, refused


def _unwrap(obj: Any) -> Any:
    for key in WRAPPERS:
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    return obj


def read_checkpoint(path: Union[str, Path], keep: Optional[KeyFilter] = None, dtype: Optional[torch.dtype] = None,
                    where: str = "") -> dict[str, Tensor]:
    """Tensors of a weights file, on the CPU (memory-mapped where the format allows).

    Args:
        path: ``.safetensors``, a torch checkpoint (``.ckpt``/``.pt``/``.pth``/``.pkl``/``.bin``; Lightning
            ``state_dict`` unwrapped) or a TorchScript archive.
        keep: optional key filter; for ``.safetensors`` the other tensors are never read.
        dtype: cast floating tensors to this dtype while reading (tensor by tensor, so a 10 GB fp32 file cast to
            fp16 peaks at the fp16 size); integer tensors keep theirs.
        where: the sentence telling the user where to get the right file (appended to every error).

    Raises:
        FileNotFoundError: no such file. ValueError: unreadable, or no tensors in it.
    """
    p = Path(path)
    hint = f"; {where}" if where else ""
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist{hint}")
    cast = (lambda t: t.to(dtype) if dtype is not None and t.is_floating_point() else t)  # noqa: E731
    take = keep or (lambda k: True)  # noqa: E731
    if p.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="pt", device="cpu") as f:
                return {k: cast(f.get_tensor(k)) for k in f.keys() if take(k)}
        except Exception as e:  # noqa: BLE001 -- safetensors raises its own error types
            raise ValueError(f"cannot read {p} as safetensors ({type(e).__name__}: {str(e)[:300]}); the file is "
                             f"corrupt or truncated{hint}") from e
    prefix = _torchscript_prefix(p)
    if prefix is not None:
        try:
            obj, refused = _read_torchscript(p, prefix), ""
        except Exception as e:  # noqa: BLE001 -- a malformed archive fails in many ways; re-raised with context
            raise ValueError(f"cannot read the tensors of TorchScript archive {p} ({type(e).__name__}: "
                             f"{str(e)[:300]}); the file is corrupt or not a model archive{hint}") from e
    else:
        obj, refused = _read_pickled(p, hint)
        obj = _unwrap(obj)
    if not isinstance(obj, dict):
        raise ValueError(f"{p} holds a {type(obj).__name__}, not a state dict of tensors{hint}")
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        why = f" (torch.load weights_only=True refused it: {refused[:200]})" if refused else ""
        raise ValueError(f"{p} holds no tensors{why}; it is not a weights file{hint}")
    return {k: cast(v) for k, v in tensors.items() if take(k)}
