"""Make the corpus helpers importable as plain modules (architectures, check), as tests/zoo.py is."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
