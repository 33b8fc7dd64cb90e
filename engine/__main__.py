import sys

from engine.build import main

sys.exit(main())
