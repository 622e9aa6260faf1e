"""`python -m validation [args]` is `linearcnn validate [args]`."""

import sys

from linearcnn.cli import main

sys.exit(main(["validate", *sys.argv[1:]]))
