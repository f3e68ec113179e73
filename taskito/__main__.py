import sys

from taskito.cli import main

sys.exit(main())
