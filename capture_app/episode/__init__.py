"""The episode file as a contract (docs/episode-format.md): its layout and validator, frame codecs, the
quality report, subtask annotations and their edits, and recovery of a crashed file. Imports ``core``."""
