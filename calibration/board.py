"""The ChArUco calibration board: its geometry, a printable image, and detection in images.

Board frame (OpenCV's): origin at the board's top-left corner as printed, +x along the
columns, +y along the rows (down the printed page), +z into the board; metres.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from calibration.model import CameraIntrinsics
from capture_app.geometry import make_transform, rot_x

DICTIONARIES = {"4X4_50": cv2.aruco.DICT_4X4_50, "4X4_100": cv2.aruco.DICT_4X4_100, "5X5_100": cv2.aruco.DICT_5X5_100,
                "6X6_250": cv2.aruco.DICT_6X6_250}


@dataclass(frozen=True)
class BoardConfig:
    """A ChArUco board: ``columns`` x ``rows`` squares of ``square_m``, markers of ``marker_m``.

    ``T_tracker_board``: the board in the frame of a tracker fixed to its mount (for the
    top-camera calibration), from the mount's drawing.
    """

    columns: int = 8        # the default fits A3 paper: 400 x 300 mm
    rows: int = 6
    square_m: float = 0.05
    marker_m: float = 0.037
    dictionary: str = "4X4_50"
    T_tracker_board: tuple = field(default_factory=lambda: tuple(map(tuple, make_transform(
        rot_x(np.pi / 2), [-0.05, 0.0, 0.0]))))

    def __post_init__(self):
        if self.dictionary not in DICTIONARIES:
            raise ValueError(f"dictionary {self.dictionary!r}: expected one of {sorted(DICTIONARIES)}")
        if not (self.columns >= 3 and self.rows >= 3 and 0 < self.marker_m < self.square_m):
            raise ValueError("a board needs >= 3 x 3 squares and 0 < marker_m < square_m")

    @property
    def width_m(self) -> float:
        return self.columns * self.square_m

    @property
    def height_m(self) -> float:
        return self.rows * self.square_m

    def opencv_board(self):
        dictionary = cv2.aruco.getPredefinedDictionary(DICTIONARIES[self.dictionary])
        return cv2.aruco.CharucoBoard((self.columns, self.rows), self.square_m, self.marker_m, dictionary)

    def image(self, pixels_per_square: int = 100) -> np.ndarray:
        """The board as a grey image, exactly columns x rows squares (no margin)."""
        size = (self.columns * pixels_per_square, self.rows * pixels_per_square)
        return self.opencv_board().generateImage(size, marginSize=0, borderBits=1)


@dataclass(frozen=True)
class BoardView:
    """A detected board: ``T_cam_board`` (PnP), the corners used and the reprojection error (px RMS)."""

    T_cam_board: np.ndarray
    object_points: np.ndarray   # (n, 3) board frame, metres
    image_points: np.ndarray    # (n, 2) pixels
    reprojection_px: float


class BoardDetector:
    """Finds the board in images and estimates its pose with a camera's intrinsics."""

    def __init__(self, board: BoardConfig, min_corners: int = 8):
        self.config = board
        self.board = board.opencv_board()
        self.detector = cv2.aruco.CharucoDetector(self.board)
        self.min_corners = min_corners

    def corners(self, image: np.ndarray):
        """ChArUco corners: (object points (n, 3), image points (n, 2)), or None when too few are seen."""
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        corners, ids, _, _ = self.detector.detectBoard(grey)
        if ids is None or len(ids) < self.min_corners:
            return None
        object_points, image_points = self.board.matchImagePoints(corners, ids)
        return object_points.reshape(-1, 3), image_points.reshape(-1, 2)

    def detect(self, image: np.ndarray, intrinsics: CameraIntrinsics) -> BoardView | None:
        """The board's pose in the camera frame, or None when it is not seen well enough."""
        found = self.corners(image)
        if found is None:
            return None
        return self.pose(*found, intrinsics)

    def pose(self, object_points: np.ndarray, image_points: np.ndarray, intrinsics: CameraIntrinsics) -> BoardView | None:
        """PnP of detected corners with ``intrinsics``."""
        K, dist = intrinsics.K, np.asarray(intrinsics.distortion, dtype=float)
        ok, rvec, tvec = cv2.solvePnP(object_points, image_points, K, dist, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok:
            return None
        projected, _ = cv2.projectPoints(object_points, rvec, tvec, K, dist)
        error = float(np.sqrt(np.mean(np.sum((projected.reshape(-1, 2) - image_points) ** 2, axis=1))))
        R, _ = cv2.Rodrigues(rvec)
        return BoardView(make_transform(R, tvec.ravel()), object_points, image_points, error)


def write_printable(board: BoardConfig, png_path: str, pdf_path: str | None = None, dpi: int = 300) -> None:
    """Write the board as a PNG (at ``dpi``) and, if asked, a PDF page at its true size (Qt's PDF writer)."""
    pixels_per_square = int(round(board.square_m / 0.0254 * dpi))
    image = board.image(pixels_per_square)
    if not cv2.imwrite(str(png_path), image):
        raise OSError(f"cannot write {png_path}")
    if pdf_path:
        import os
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        from PySide6 import QtCore, QtGui, QtWidgets
        QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
        writer = QtGui.QPdfWriter(str(pdf_path))
        margin_mm = 10.0
        page = QtCore.QSizeF(board.width_m * 1000 + 2 * margin_mm, board.height_m * 1000 + 2 * margin_mm + 10)
        writer.setPageSize(QtGui.QPageSize(page, QtGui.QPageSize.Millimeter))
        writer.setPageMargins(QtCore.QMarginsF(0, 0, 0, 0))
        writer.setResolution(dpi)
        painter = QtGui.QPainter(writer)
        mm = dpi / 25.4
        qimage = QtGui.QImage(image.data, image.shape[1], image.shape[0], image.strides[0],
                              QtGui.QImage.Format_Grayscale8)
        target = QtCore.QRectF(margin_mm * mm, margin_mm * mm, board.width_m * 1000 * mm, board.height_m * 1000 * mm)
        painter.drawImage(target, qimage)
        painter.drawText(QtCore.QPointF(margin_mm * mm, (board.height_m * 1000 + margin_mm + 7) * mm),
                         f"ChArUco {board.columns}x{board.rows}, square {board.square_m * 1000:.1f} mm, marker "
                         f"{board.marker_m * 1000:.1f} mm, {board.dictionary}. Print at 100%; measure a square.")
        painter.end()


def T_board_wrist_mark(hand: str) -> np.ndarray:
    """Where a hand lies for the wrist-mount procedure, in the board frame (metres).

    Palm down on the board, the wrist centre 15 mm above the printed mark (left at (60, 80) mm,
    right at (60, 220) mm from the board's origin corner), the middle finger along the board's +x.
    Left wrist frame: +x (to the fingertips) = board +x; right: +x (to the elbow) = board -x;
    both: +y (palm -> back) = board -z (up from the board).
    """
    up = np.array([0.0, 0.0, -1.0])
    x = np.array([1.0, 0.0, 0.0]) if hand == "left" else np.array([-1.0, 0.0, 0.0])
    R = np.column_stack([x, up, np.cross(x, up)])
    position = [0.06, 0.08, -0.015] if hand == "left" else [0.06, 0.22, -0.015]
    return make_transform(R, position)
