import sys

from unipet.cli import main

sys.exit(main())
