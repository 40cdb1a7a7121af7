#!/usr/bin/python3
# /usr/local/bin/retransmon in the image: the console script, for Debian's python3.
import sys

from retransmon.cli import main

sys.exit(main())
