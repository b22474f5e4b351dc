"""A module that takes seconds to import, as torch can: for signals during the preloading."""

import time

time.sleep(20)
