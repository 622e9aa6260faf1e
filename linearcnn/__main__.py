"""`python -m linearcnn` (and `torchrun -m linearcnn train ...`) runs the CLI."""

from linearcnn.cli import main

if __name__ == "__main__":
    main()
