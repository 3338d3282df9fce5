import sys

from soak.driver import main

sys.exit(main())
