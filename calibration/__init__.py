"""Rig calibration: the versioned calibration file and the tools that produce it."""
