import sys

from prod_core.cli.main import main

sys.exit(main())
