"""Fixtures of the recognizer tests: a student file with a model card, a recognizer on it, ORL chips."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from students import orl_chips, recognizer, student_file  # noqa: E402,F401
