"""MANUS Quantum Metagloves through the MANUS SDK's C API (ctypes)."""
