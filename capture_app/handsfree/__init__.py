"""Hands-free operation of a recorder (README, "Hands-free operation"): glove gestures, a pedal or clicker
(evdev) and spoken or beeped cues, all inside the recorder
process (``capture-app serve``) so they need no window, no focus and no display.

Every command goes through the recorder's control channel (``capture_app.recorder.control_server``, its
in-process endpoint) exactly as a monitor's key does: run once, acknowledged once durable, logged in the
episode's ``/events`` with its source (``gesture``, ``pedal``) and its latency from its onset.
"""
