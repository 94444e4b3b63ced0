"""`python -m promptehr ...`: the `promptehr` command (promptehr.cli.main)."""
import sys

from promptehr.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
