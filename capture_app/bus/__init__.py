"""The wire (docs/protocol.md, docs/control.md): bus messages, the check every message passes, driver
status records, remote clocks and CurveZMQ keys, and the control channel's encoding. Imports ``core`` and
``episode`` (codec names)."""
