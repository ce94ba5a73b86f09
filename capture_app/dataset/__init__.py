"""From episodes to training sets: the LeRobot export and jobs over many episodes.

Data path: episode files (HDF5, docs/episode-format.md) -> ``training_rows`` (what a frame
holds) -> ``lerobot_export`` (per-episode shards: video files and frame columns) -> a merge
that writes the LeRobotDataset v3.0 metadata. ``jobs`` runs any per-episode function on a
local process pool or on Ray; ``catalog`` keeps one row per episode.
"""
