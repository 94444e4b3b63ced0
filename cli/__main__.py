import sys

from promptehr.cli.main import main

sys.exit(main())
