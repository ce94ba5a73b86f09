"""The field panel: a web page for a phone that watches and runs a recorder over its control channel (docs/panel.md)."""
