"""Shared test setup: make tests/ importable (zoo.py) from every tier's folder."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
