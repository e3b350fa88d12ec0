import sys

from fedge.cli.commands import main

sys.exit(main())
