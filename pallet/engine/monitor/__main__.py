import sys

from pallet.engine.monitor.main import main

sys.exit(main())
