"""`python -m recflow` runs the recflow command line."""

from recflow.console import main

if __name__ == "__main__":
    raise SystemExit(main())
