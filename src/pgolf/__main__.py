import sys

from pgolf.tools.cli import main

sys.exit(main())
