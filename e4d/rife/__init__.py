"""The RIFE IFNet model package (HD v3.6 and 4.x) and its checkpoint loading.

Public API: ``loader.load_rife_model`` / ``loader.detect_version`` / ``loader.random_model``, the networks in
``ifnet4`` / ``ifnet36`` and the backward ``warp``. The interpolator contract that runs these networks lives in
:mod:`e4d.interp` (``e4d.interp.RifeInterpolator``); this package never imports it.
"""
