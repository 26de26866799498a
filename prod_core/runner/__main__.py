import sys

from prod_core.runner.app import main

sys.exit(main())
