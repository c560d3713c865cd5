"""`python -m deepcvr`: the same as the `deepcvr` command."""

from deepcvr.cli import main

if __name__ == "__main__":
    main()
