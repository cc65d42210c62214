"""Stable Video Diffusion image-to-video for the image-to-4D entry (diffusers pipeline, SGM single-file loading).
Modules: ``convert`` (SVD single file -> diffusers), ``pipeline``. Nothing heavy is imported here."""
