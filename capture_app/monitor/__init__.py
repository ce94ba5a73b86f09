"""The live monitor and review window (PySide6 + pyqtgraph)."""
