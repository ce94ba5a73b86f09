"""The panel's link to a recorder: the monitor's ``RecorderClient`` without the per-view decoding.

The Qt monitor decodes every ``view`` (20 Hz) because it draws every one. The panel shows a
thumbnail a couple of times a second, so its state thread keeps the newest ``view`` as it came
(msgpack-decoded, images still JPEG / raw) and the thumbnails are decoded only when one is made
(``thumbs.py``). H.264 cameras are the exception: their frames only decode in order, so those
are fed to the decoder on every view (docs/control.md, "h264 colour").
"""

from __future__ import annotations

import cv2

from capture_app.monitor.client import RecorderClient
from capture_app.monitor.overlay import LiveVideo


class PanelFeed(RecorderClient):
    """``RecorderClient`` whose ``view`` is the newest raw view; ``video_images[key]`` the newest decoded
    (RGB) image of an H.264 camera ``key`` ("ego" / "top"). ``views_seen`` counts views received."""

    def __init__(self, *args, **kwargs):
        self.video_images: dict = {}
        self.views_seen = 0
        self._panel_video = LiveVideo()
        super().__init__(*args, **kwargs)

    def _on_view(self, payload) -> None:
        """The newest raw view (the panel draws its own thumbnails), H.264 cameras decoded as they arrive."""
        if not isinstance(payload, dict) or "t_eval_ns" not in payload:
            self.malformed += 1
            return
        for key in ("ego", "top"):
            camera = payload.get(key)
            if isinstance(camera, dict) and camera.get("encoding") == "h264":
                try:
                    image = self._panel_video.image(key, camera)
                except (KeyError, TypeError, ValueError, cv2.error):
                    self.malformed += 1
                    image = None
                if image is not None:
                    self.video_images[key] = image
        self.view = payload
        self.views_seen += 1
