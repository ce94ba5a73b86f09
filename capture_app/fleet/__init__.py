"""From one rig to a fleet: the upload queue (``upload``: episodes to an object store with a SHA-256
manifest, verified, resumed, deleted locally only by policy), each rig's heartbeat beside its uploads,
and the fleet view over a destination (``status``, ``report``). docs/upload.md is the public contract."""
