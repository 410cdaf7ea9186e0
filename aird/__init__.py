"""aird: low-resolution face recognition by Adaptable Instance-Relation Distillation."""

__version__ = "0.1.0"
