import sys

from dsc.cli import main

sys.exit(main())
