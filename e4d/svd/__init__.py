"""Stable Video Diffusion image-to-video for the image-to-4D entry (diffusers pipeline, SGM single-file loading,
white-background masks). Modules: ``keymap``, ``convert``, ``pipeline``, ``masks``. Nothing heavy is imported here."""
