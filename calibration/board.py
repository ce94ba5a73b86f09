"""The ChArUco calibration board: its geometry, a printable image, and detection in images.

Board frame (OpenCV's): origin at the board's top-left corner as printed, +x along the
columns, +y along the rows (down the printed page), +z into the board; metres.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from calibration.model import CameraIntrinsics
from capture_app.core.geometry import make_transform, rot_x

DICTIONARIES = {"4X4_50": cv2.aruco.DICT_4X4_50, "4X4_100": cv2.aruco.DICT_4X4_100, "5X5_100": cv2.aruco.DICT_5X5_100,
                "6X6_250": cv2.aruco.DICT_6X6_250}


@dataclass(frozen=True)
class BoardConfig:
    """A ChArUco board: ``columns`` x ``rows`` squares of ``square_m``, markers of ``marker_m``.

    ``T_tracker_board``: the board in the frame of a tracker fixed to its mount (for the
    top-camera calibration), from the mount's drawing.
    """

    columns: int = 8        # the default, 400 x 300 mm: printed on A2 (A3 is 297 mm tall: use 45 mm squares)
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

    def to_json(self) -> dict:
        """The board file's content (``capture-app calibrate board`` writes it beside the PDF)."""
        return {"version": 1, "columns": self.columns, "rows": self.rows, "square_mm": self.square_m * 1000,
                "marker_mm": self.marker_m * 1000, "dictionary": self.dictionary,
                "T_tracker_board": [list(map(float, row)) for row in self.T_tracker_board]}

    @classmethod
    def from_json(cls, data: dict, where: str = "<board>") -> "BoardConfig":
        try:
            return cls(columns=int(data["columns"]), rows=int(data["rows"]), square_m=float(data["square_mm"]) / 1000,
                       marker_m=float(data["marker_mm"]) / 1000, dictionary=str(data["dictionary"]),
                       T_tracker_board=tuple(map(tuple, np.asarray(data["T_tracker_board"], float).reshape(4, 4))))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: not a board file ({type(exc).__name__}: {exc}); write one with "
                             f"`capture-app calibrate board`") from None

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


PAPER_MM = {"A2": (594.0, 420.0), "A3": (420.0, 297.0), "A4": (297.0, 210.0)}  # landscape
MIN_MARGIN_MM = 10.0  # room for the origin mark, the scale bar and the wrist ticks


def page_size_mm(board: BoardConfig, paper: str = "A2") -> tuple[float, float]:
    """The page the board is printed on (landscape, mm): ``paper`` when the board and its margins fit,
    else ValueError saying which paper or board size would."""
    width, height = board.width_m * 1000, board.height_m * 1000
    if paper == "fit":
        return width + 2 * MIN_MARGIN_MM, height + 2 * MIN_MARGIN_MM
    page = PAPER_MM[paper]
    if width + 2 * MIN_MARGIN_MM > page[0] or height + 2 * MIN_MARGIN_MM > page[1]:
        raise ValueError(f"a {width:.0f} x {height:.0f} mm board does not fit {paper} ({page[0]:.0f} x {page[1]:.0f} mm) "
                         f"with {MIN_MARGIN_MM:.0f} mm margins: use smaller squares, fewer of them, or --paper fit")
    return page


def write_printable(board: BoardConfig, png_path: str, pdf_path: str | None = None, dpi: int = 300,
                    paper: str = "A2") -> None:
    """Write the board as a PNG (at ``dpi``) and, if asked, a PDF page at true size (Qt's PDF writer) with the
    board centred, its origin corner and axes marked, a 100 mm scale bar to check the print, and ticks on
    the margins where the wrist procedure's marks are (``T_board_wrist_mark``)."""
    pixels_per_square = int(round(board.square_m / 0.0254 * dpi))
    image = board.image(pixels_per_square)
    if not cv2.imwrite(str(png_path), image):
        raise OSError(f"cannot write {png_path}")
    if not pdf_path:
        return
    import os
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtCore, QtGui, QtWidgets
    QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    page_w, page_h = page_size_mm(board, paper)
    width, height = board.width_m * 1000, board.height_m * 1000
    x0, y0 = (page_w - width) / 2, (page_h - height) / 2  # the board's origin corner on the page, mm
    writer = QtGui.QPdfWriter(str(pdf_path))
    writer.setPageSize(QtGui.QPageSize(QtCore.QSizeF(page_w, page_h), QtGui.QPageSize.Millimeter))
    writer.setPageMargins(QtCore.QMarginsF(0, 0, 0, 0))
    writer.setResolution(dpi)
    mm = dpi / 25.4
    painter = QtGui.QPainter(writer)

    def point(x, y):
        return QtCore.QPointF(x * mm, y * mm)

    def line(x1, y1, x2, y2):
        painter.drawLine(point(x1, y1), point(x2, y2))

    qimage = QtGui.QImage(image.data, image.shape[1], image.shape[0], image.strides[0], QtGui.QImage.Format_Grayscale8)
    painter.drawImage(QtCore.QRectF(x0 * mm, y0 * mm, width * mm, height * mm), qimage)
    painter.setPen(QtGui.QPen(QtGui.QColor("red"), 0.4 * mm))
    font = painter.font()
    font.setPointSizeF(7)
    painter.setFont(font)
    # origin corner and axes (in the margin, outside the pattern)
    line(x0 - 8, y0, x0 - 1, y0)
    line(x0, y0 - 8, x0, y0 - 1)
    painter.drawText(point(x0 - 11, y0 - 9), "origin")
    line(x0 + 5, y0 - 4, x0 + 25, y0 - 4)
    painter.drawText(point(x0 + 27, y0 - 3), "+x")
    line(x0 - 4, y0 + 5, x0 - 4, y0 + 25)
    painter.drawText(point(x0 - 7, y0 + 30), "+y")
    # wrist marks: ticks on the margins at the marks' x and y (lay the wrist where the lines from them cross)
    for hand in ("left", "right"):
        x, y = np.asarray(T_board_wrist_mark(hand))[:2, 3] * 1000
        line(x0 - 10, y0 + y, x0 - 2, y0 + y)
        painter.drawText(point(x0 - 11, y0 + y - 1.5), f"{hand[0].upper()} wrist")
        line(x0 + x, y0 + height + 2, x0 + x, y0 + height + 10)
    painter.drawText(point(x0 + 62, y0 + height + 9), "wrist marks' x")
    # 100 mm scale bar with 10 mm ticks
    bx, by = x0 + width - 100, y0 + height + 6
    painter.setPen(QtGui.QPen(QtGui.QColor("black"), 0.3 * mm))
    line(bx, by, bx + 100, by)
    for i in range(11):
        line(bx + 10 * i, by - (2.5 if i % 5 == 0 else 1.2), bx + 10 * i, by)
    painter.drawText(point(bx, by + 4), "100 mm: measure to check the print scale")
    painter.drawText(point(x0, y0 - 4.5 if y0 > 8 else 4),
                     f"ChArUco {board.columns}x{board.rows}, square {board.square_m * 1000:.1f} mm, marker "
                     f"{board.marker_m * 1000:.1f} mm, {board.dictionary}, on {paper}. Print at 100%.")
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
