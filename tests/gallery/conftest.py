"""The gallery tests share the recognizer tests' fixtures (a student file with a card, ORL chips)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "recognizer"))
from students import orl_chips, recognizer, student_file  # noqa: E402,F401
