"""``python -m e4d fit|render|export|demo`` (see :mod:`e4d.cli`)."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
