import sys

from ppl_ssvae.cli import main

sys.exit(main())
