"""Diffusion guidance for the 4D fit: Zero123 SDS (paper eq. 8, 14) and the official-release "refine" guidance.

Modules: ``camera_embed`` (relative cameras -> zero123 4-vector), ``components`` (the frozen components bundle,
camera projection, released configs), ``loader`` (diffusers folders, no remote code), ``convert``
(``stable_zero123.ckpt``), ``zero123`` (:class:`Zero123Guidance`), ``refine`` (:class:`RefineGuidance`).
Nothing heavy is imported here.
"""
