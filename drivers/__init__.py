"""Device drivers: real SDKs, the simulated rig and replay, behind one interface."""
