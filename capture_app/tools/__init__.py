"""Commands on top of everything: doctor, the calibration tools, the Rerun view."""
