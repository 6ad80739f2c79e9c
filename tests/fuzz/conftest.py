"""Make the fuzzer's modules importable as plain modules (graphgen, harness), as tests/zoo.py is."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
