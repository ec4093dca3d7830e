import sys

from gwctl.testing.cli import main

sys.exit(main())
