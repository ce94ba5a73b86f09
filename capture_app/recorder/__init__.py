"""The live path in one process: intake of bus messages -> synchronizer -> writer, episodes and takes run
by the control server, stream health, and the finishing work on a closed episode (final table, resync)."""
