"""The README's main job: synthetic data -> short CPU training -> evaluation -> visualisations.

Filled in by the detectron2 integration; until then it stops with a clear message.
"""

import sys

if __name__ == "__main__":
    sys.exit("tools/run_demo.py: the main job is not implemented yet (issue #8, integration)")
