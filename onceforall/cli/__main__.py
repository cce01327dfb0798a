"""``python -m onceforall.cli``, as torchrun runs ``onceforall train``."""

import sys

from onceforall.cli import main

if __name__ == "__main__":
    sys.exit(main())
