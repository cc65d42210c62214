"""SyncDreamer (Liu et al. 2024) re-implemented in plain PyTorch, plus the SyncDreamer-T temporal extension of
Efficient4D (Pan et al. 2024, §4.1).

Module names follow the official ``syncdreamer-pretrain.ckpt`` so the released Lightning checkpoint loads with
``strict=True``; every size is inferred from the state dict (``dims.infer_dims``). Public entry points:

* :func:`e4d.syncdreamer.loader.load_syncdreamer` -- checkpoint (.ckpt / .safetensors) -> :class:`SyncDreamer`.
* :func:`e4d.syncdreamer.sampler.generate_view_matrix` -- K prepared frames -> ``ViewMatrix [K, 16, 256, 256, 3]``.
* :func:`e4d.syncdreamer.pipeline.syncdreamer_t` -- a raw video (+ mask) -> frame selection, preprocessing, sampling.
* :mod:`e4d.syncdreamer.temporal` -- the eq. 10/15 smoothing weights.

Nothing heavy is imported here.
"""
