"""Pictures of the hands-free gesture vocabulary, drawn from the keypoints the simulated glove produces for
each pose (drivers/sim/gestures.py), offscreen with Qt's painter to one PNG (README, "Hands-free operation").

    QT_QPA_PLATFORM=offscreen python3 -m capture_app.tools.gesture_pictures docs/gestures.png

Each pose is the left hand in its wrist frame, seen twice: from the back of the hand (fingers up, thumb to
the right: the wrist frame's x up, z right) and from the thumb's side (x up, palm to the left).
"""

from __future__ import annotations

import os
import sys

import numpy as np

from capture_app.core.hand import KEYPOINT_PARENTS
from capture_app.rig.handsfree_config import DEFAULT_GESTURES
from drivers.sim.gestures import COMMAND_POSES, shape_keypoints

CELL = 220          # pixels per view
SCALE = 1000.0      # pixels per metre


def draw(path: str) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtCore, QtGui
    app = QtGui.QGuiApplication.instance() or QtGui.QGuiApplication([])
    cols = 3
    rows = int(np.ceil(len(COMMAND_POSES) / cols))
    image = QtGui.QImage(cols * 2 * CELL, rows * (CELL + 40), QtGui.QImage.Format_RGB32)
    image.fill(QtGui.QColor("white"))
    painter = QtGui.QPainter(image)
    painter.setRenderHint(QtGui.QPainter.Antialiasing)
    font = painter.font()
    font.setPointSize(11)
    painter.setFont(font)
    for n, pose in enumerate(COMMAND_POSES):
        k = shape_keypoints(pose)
        x0, y0 = (n % cols) * 2 * CELL, (n // cols) * (CELL + 40)
        painter.setPen(QtGui.QColor("black"))
        painter.drawText(QtCore.QRectF(x0, y0 + 4, 2 * CELL, 30), QtCore.Qt.AlignCenter,
                         f"{pose}  \u2192  {DEFAULT_GESTURES.get(pose, '-')}")
        for view, (right, up) in enumerate(((k[:, 2], k[:, 0]), (-k[:, 1], k[:, 0]))):
            cx, cy = x0 + view * CELL + CELL / 2, y0 + 40 + CELL - 20
            px = cx + SCALE * right
            py = cy - SCALE * up
            painter.setPen(QtGui.QPen(QtGui.QColor(90, 90, 90), 3))
            for i, parent in enumerate(KEYPOINT_PARENTS):
                if parent >= 0:
                    painter.drawLine(QtCore.QPointF(px[parent], py[parent]), QtCore.QPointF(px[i], py[i]))
            for i in range(len(k)):
                tip = i in (4, 9, 14, 19, 24)
                painter.setBrush(QtGui.QColor("magenta") if tip else QtGui.QColor(40, 120, 200))
                painter.setPen(QtCore.Qt.NoPen)
                r = 5 if tip else 3.5
                painter.drawEllipse(QtCore.QPointF(px[i], py[i]), r, r)
            painter.setPen(QtGui.QColor(150, 150, 150))
            painter.drawText(QtCore.QRectF(x0 + view * CELL, y0 + 40 + CELL - 18, CELL, 16), QtCore.Qt.AlignCenter,
                             "back of the hand" if view == 0 else "thumb side")
    painter.end()
    if not image.save(path):
        raise OSError(f"cannot write {path}")
    del app


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    draw(argv[0] if argv else "docs/gestures.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
