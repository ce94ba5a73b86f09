"""Decoded colour frames of an episode's camera stream, by row, whatever their storage:
JPEG rows decode alone; H.264 rows (docs/episode-format.md, "Video storage") decode from the
keyframe at or before them. Reading rows in order decodes each packet once.
"""

from __future__ import annotations

import h5py
import numpy as np

from capture_app.episode.image_codec import decode_jpeg


def colour_encoding(group: h5py.Group, column: str = "color") -> str:
    """How a stream group stores ``column``: 'jpeg', 'h264' or 'raw'."""
    return str(group.attrs.get(f"{column}_encoding", "raw"))


def decodable_rows(packet: np.ndarray, sender_epoch: np.ndarray, keyframe: np.ndarray) -> np.ndarray:
    """Per row of a video stream: whether its frame decodes cleanly, i.e. a keyframe precedes it
    and no packet between that keyframe and it is missing (consecutive encoder packet numbers, same
    sender epoch). Pure."""
    n = len(packet)
    if n == 0:
        return np.zeros(0, bool)
    seq = np.asarray(packet, np.int64)
    epoch = np.asarray(sender_epoch)
    keyframe = np.asarray(keyframe, bool)
    rows = np.arange(n)
    breaks = np.zeros(n, bool)  # row i does not follow row i-1 in the stream
    breaks[1:] = (np.diff(seq) != 1) | (epoch[1:] != epoch[:-1])
    last_keyframe = np.maximum.accumulate(np.where(keyframe, rows, -1))
    last_break = np.maximum.accumulate(np.where(breaks, rows, -1))
    return (last_keyframe >= 0) & (last_break <= last_keyframe)


class FrameReader:
    """RGB frames (h, w, 3) uint8 of ``stream``'s colour column in an open episode file."""

    def __init__(self, f: h5py.File, stream: str, column: str = "color"):
        group = f[f"streams/{stream}"]
        self.stream = stream
        self.encoding = colour_encoding(group, column)
        self._data = group[column]
        self._decoder = None
        self._next_row = -1          # the row the video decoder can take next without a reset
        self._last: tuple[int, np.ndarray | None] | None = None
        if self.encoding == "h264":
            from capture_app.episode.video_codec import VideoDecoder
            self._decoder = VideoDecoder()
            self.keyframes = np.flatnonzero(group[f"{column}_keyframe"][:])
            self.decodable = decodable_rows(group[f"{column}_packet"][:], group["sender_epoch"][:],
                                            group[f"{column}_keyframe"][:])

    def __len__(self) -> int:
        return len(self._data)

    def frame(self, row: int) -> np.ndarray | None:
        """The decoded frame of ``row``; None when it cannot be decoded (a video frame whose keyframe
        interval lost a packet before it, or that has no keyframe before it)."""
        if self.encoding == "jpeg":
            return decode_jpeg(self._data[row])
        if self.encoding != "h264":
            return np.asarray(self._data[row])
        if not self.decodable[row]:
            return None
        if self._last is not None and self._last[0] == row:
            return self._last[1]
        start = int(self.keyframes[np.searchsorted(self.keyframes, row, side="right") - 1])
        if not start < self._next_row <= row:  # not continuing the current run: restart at the keyframe
            self._decoder.reset()
            self._next_row = start
        for r in range(self._next_row, row):  # the frames on the way: decoded, not converted to RGB
            self._decoder.decode(self._data[r], image=False)
        image = self._decoder.decode(self._data[row])
        self._next_row = row + 1
        self._last = (row, image)
        return image
