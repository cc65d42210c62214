"""Original single-file checkpoint layouts (ldm / SGM / OpenCLIP) and their conversion to diffusers/transformers
modules, shared by the SVD and zero123 loaders. Modules: ``keymap`` (names), ``convert`` (configs, renaming,
building). Nothing heavy is imported here."""
