"""The monitor's views (pyqtgraph, 2-D only: GL views do not work offscreen).

Each view has ``update_state(state)`` called from the GUI timer with a ``ViewState``;
none of them touches the session or a thread.
"""

from __future__ import annotations

import zlib

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from calibration.model import CameraIntrinsics
from capture_app.core.hand import KEYPOINT_PARENTS
from capture_app.core.live_verdict import stream_verdicts
from capture_app.monitor.overlay import HANDS, ViewState, fingertip_pixels, intrinsics_for, wrist_axes_pixels

TIP_BRUSH = (255, 0, 255)  # magenta: not a colour the cameras' scenes use
HAND_PENS = {"left": (80, 160, 255), "right": (255, 140, 60)}
AXIS_PENS = ((255, 40, 40), (40, 220, 40), (60, 120, 255))  # x, y, z
STATE_COLOURS = {"ok": "#2e7d32", "degraded": "#f9a825", "lost": "#c62828", "waiting": "#757575", "failed": "#c62828"}
_BONES = np.array([(p, i) for i, p in enumerate(KEYPOINT_PARENTS) if p >= 0]).ravel()


def _image_box(title: str):
    widget = pg.GraphicsLayoutWidget()
    widget.setBackground("k")
    box = widget.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
    box.setMouseEnabled(False, False)
    image = pg.ImageItem(axisOrder="row-major")
    box.addItem(image)
    label = pg.TextItem(title, color="w", anchor=(0, 0))
    box.addItem(label, ignoreBounds=True)
    return widget, box, image, label


class EgoView(QtWidgets.QWidget):
    """The ego image with the wrist frames and fingertips projected through the calibration."""

    DISPLAY_WIDTH = 640  # wider images are shown every n-th pixel: a 720p image costs 4x less to draw

    def __init__(self, intrinsics: CameraIntrinsics):
        super().__init__()
        self.intrinsics = intrinsics
        self.display_scale = 1  # of the last image shown
        self.widget, self.box, self.image, self.label = _image_box("ego camera")
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.widget)
        self.tips = pg.ScatterPlotItem(size=11, brush=pg.mkBrush(*TIP_BRUSH), pen=pg.mkPen("w", width=1))
        self.board_corners = pg.ScatterPlotItem(size=7, symbol="+", brush=pg.mkBrush(0, 230, 0),
                                                pen=pg.mkPen(0, 230, 0, width=2))
        self.box.addItem(self.board_corners)
        self.axes = [pg.PlotCurveItem(pen=pg.mkPen(c, width=3), connect="pairs") for c in AXIS_PENS]
        for item in (*self.axes, self.tips):
            self.box.addItem(item)
        self.last_tip_pixels: dict[str, np.ndarray] = {}

    def update_state(self, state: ViewState) -> None:
        if state.ego_image is None:
            return
        s = self.display_scale = max(1, state.ego_image.shape[1] // self.DISPLAY_WIDTH)
        shown = state.ego_image[::s, ::s]
        self.image.setImage(shown, autoLevels=False, levels=(0, 255))
        k = intrinsics_for(self.intrinsics, state.ego_image)
        tips = fingertip_pixels(state, k)
        self.last_tip_pixels = tips
        points = np.vstack([tips[h] for h in HANDS]) / s
        points = points[np.isfinite(points).all(axis=1)]
        self.tips.setData(pos=points)
        axes = wrist_axes_pixels(state, k)
        for a, item in enumerate(self.axes):
            segments = np.vstack([np.vstack([axes[h][0], axes[h][a + 1]]) for h in HANDS]) / s
            segments = segments.reshape(-1, 2, 2)[np.isfinite(segments.reshape(-1, 4)).all(axis=1)].reshape(-1, 2)
            item.setData(segments[:, 0], segments[:, 1], skipFiniteCheck=True) if len(segments) else item.setData([], [])
        self.box.setRange(xRange=(0, shown.shape[1]), yRange=(0, shown.shape[0]), padding=0)

    def show_board(self, image_points: np.ndarray | None, text: str) -> None:
        """Board detection: the ChArUco corners found (full-resolution pixels, None hides them) and a summary."""
        if image_points is None or not len(image_points):
            self.board_corners.setData([])
        else:
            self.board_corners.setData(pos=np.asarray(image_points) / self.display_scale)
        self.label.setText(f"ego camera   {text}" if text else "ego camera")

    def image_to_widget(self, uv: np.ndarray) -> QtCore.QPoint:
        """Widget pixel of a full-resolution image pixel (for tests and tooltips)."""
        scene = self.box.mapViewToScene(QtCore.QPointF(uv[0] / self.display_scale, uv[1] / self.display_scale))
        return self.widget.mapFromScene(scene)


class TopView(QtWidgets.QWidget):
    """The top camera: colour, or depth (toggle)."""

    def __init__(self):
        super().__init__()
        self.widget, self.box, self.image, self.label = _image_box("top camera")
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.widget)
        self.show_depth = False
        colormap = pg.colormap.get("viridis")
        self._lut = colormap.getLookupTable(0.0, 1.0, 256)
        # the depth image's colour scale, in the device's depth units (RealSense and the sim: millimetres)
        self.scale = pg.ColorBarItem(values=(0, 1), colorMap=colormap, interactive=False, label="depth (mm)")
        self.widget.addItem(self.scale, row=0, col=1)
        self.scale.setVisible(False)

    def toggle_depth(self) -> None:
        self.show_depth = not self.show_depth
        self.label.setText("top camera: depth" if self.show_depth else "top camera")
        self.scale.setVisible(self.show_depth)

    def update_state(self, state: ViewState) -> None:
        if self.show_depth and state.top_depth is not None:
            depth = state.top_depth
            valid = depth[depth > 0]
            lo, hi = (np.percentile(valid, [2, 98]) if len(valid) else (0, 1))
            self.image.setImage(depth, lut=self._lut, levels=(lo, max(hi, lo + 1)))
            self.scale.setLevels((float(lo), float(max(hi, lo + 1))))
        elif state.top_image is not None:
            self.image.setImage(state.top_image, lut=None, autoLevels=False, levels=(0, 255))


class HandView(QtWidgets.QWidget):
    """One hand's 25 keypoints in its wrist frame: top (x-z) and side (x-y) projections, millimetres."""

    def __init__(self, hand: str):
        super().__init__()
        self.hand = hand
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.plots, self.skeletons, self.points, self.lost_tags = [], [], [], []
        for title, axes in (("x-z", (0, 2)), ("x-y", (0, 1))):
            plot = pg.PlotWidget(title=f"{hand} {title} mm")
            plot.setMinimumWidth(160)
            tag = pg.TextItem(f"{hand.upper()} LOST", color="w", fill=pg.mkBrush(198, 40, 40), anchor=(0.5, 0.5))
            tag.setPos(50, 0)
            tag.setVisible(False)
            plot.addItem(tag, ignoreBounds=True)
            self.lost_tags.append(tag)
            plot.setAspectLocked(True)
            plot.setXRange(-200, 200) if hand == "right" else plot.setXRange(-50, 200)
            plot.setYRange(-120, 120)
            plot.hideButtons()
            skeleton = pg.PlotCurveItem(pen=pg.mkPen(HAND_PENS[hand], width=2), connect="pairs")
            plot.addItem(skeleton)
            points = pg.ScatterPlotItem(size=6, brush=pg.mkBrush(*TIP_BRUSH))
            plot.addItem(points)
            layout.addWidget(plot)
            self.plots.append((plot, axes))
            self.skeletons.append(skeleton)
            self.points.append(points)

    def update_state(self, state: ViewState) -> None:
        k = state.keypoints[self.hand]
        lost = k is None or not state.hand_valid.get(self.hand, True)
        for tag in self.lost_tags:
            tag.setVisible(lost)
        for (plot, (a, b)), skeleton, points in zip(self.plots, self.skeletons, self.points):
            if k is None:
                skeleton.setData([], [])
                points.setData([])
                continue
            mm = np.asarray(k) * 1000.0
            bones = mm[_BONES]
            skeleton.setData(bones[:, a], bones[:, b], skipFiniteCheck=True)
            points.setData(mm[:, a], mm[:, b])


class WorldView(pg.PlotWidget):
    """Top-down view of the head (ego camera) and both wrists in the world (x right, z toward the operator)."""

    TRAIL = 40

    def __init__(self):
        super().__init__(title="world, top-down (m)")
        self.setAspectLocked(True)
        self.hideButtons()
        self.invertY(False)
        self.setXRange(-0.6, 0.6)
        self.setYRange(-0.9, 0.3)
        self.head = pg.ScatterPlotItem(size=14, symbol="t", brush=pg.mkBrush("w"))
        self.addItem(self.head)
        self.wrists = {h: pg.ScatterPlotItem(size=11, brush=pg.mkBrush(*HAND_PENS[h])) for h in HANDS}
        self.trails = {h: self.plot(pen=pg.mkPen(HAND_PENS[h], width=1)) for h in HANDS}
        for item in self.wrists.values():
            self.addItem(item)
        self._history = {h: [] for h in HANDS}

    def update_state(self, state: ViewState) -> None:
        if state.T_world_cam is not None:
            p = state.T_world_cam[:3, 3]
            self.head.setData([p[0]], [p[2]])
        for h in HANDS:
            T = state.T_world_wrist[h]
            if T is None:
                self.wrists[h].setData([])
                continue
            self.wrists[h].setData([T[0, 3]], [T[2, 3]])
            history = self._history[h]
            history.append((T[0, 3], T[2, 3]))
            del history[:-self.TRAIL]
            xs, zs = zip(*history)
            self.trails[h].setData(xs, zs)


def drivers_by_stream(status: dict) -> dict[str, dict]:
    """Each stream's driver health (a recorder ``status`` message's ``drivers``), by stream name."""
    return {s: h for h in (status.get("drivers") or {}).values() for s in (h.get("streams") or [h.get("stream")])}


class HealthTable(QtWidgets.QTableWidget):
    """Per stream: state (colour-coded), rate against expected, age, gaps, writer refusals, rejections,
    tracking, reason. Live from the recorder's status, or in review from the file's per-tick status."""

    COLUMNS = ("stream", "state", "rate / expected", "age", "gaps", "refused", "rejected", "tracking", "reason")

    def __init__(self, streams: list[str]):
        super().__init__(len(streams), len(self.COLUMNS))
        self.streams = streams
        self.setHorizontalHeaderLabels(self.COLUMNS)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(22)
        self.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        self.setFocusPolicy(QtCore.Qt.NoFocus)
        self.setVerticalScrollBarPolicy(QtCore.Qt.ScrollBarAlwaysOff)
        self.horizontalHeader().setStretchLastSection(True)
        for row, stream in enumerate(streams):
            for col in range(len(self.COLUMNS)):
                self.setItem(row, col, QtWidgets.QTableWidgetItem(stream if col == 0 else ""))
        self.resizeColumnsToContents()
        for col, width in ((1, 80), (2, 110), (3, 70)):
            self.setColumnWidth(col, max(self.columnWidth(col), width))
        # every stream visible without scrolling: header plus one row per stream
        self.setMinimumHeight(self.horizontalHeader().height() + 22 * len(streams) + 4)
        self.states: dict[str, str] = {}
        self.levels: dict[str, str] = {}

    def _set_row(self, row: int, values, state: str) -> None:
        for col, text in enumerate(values):
            item = self.item(row, col)
            if item.text() != text:
                item.setText(text)
                item.setToolTip(text)
        self.item(row, 1).setBackground(QtGui.QColor(STATE_COLOURS.get(state, "#757575")))

    def update_from_status(self, status: dict) -> None:
        """Rows from a recorder ``status`` message (docs/control.md), judged by
        ``capture_app.core.live_verdict.stream_verdicts`` (the top bar's rules). ``levels`` keeps each
        stream's level (ok / degraded / lost)."""
        streams, writer = status.get("streams") or {}, status.get("writer") or {}
        refused, rejected = writer.get("refused") or {}, status.get("rejected") or {}
        verdicts = stream_verdicts(status)
        for row, stream in enumerate(self.streams):
            st, verdict = streams.get(stream), verdicts.get(stream)
            if st is None or verdict is None:
                continue
            n_refused, n_rejected = refused.get(stream, 0), sum((rejected.get(stream) or {}).values())
            self.states[stream] = verdict.state
            self.levels[stream] = verdict.level
            age = "-" if st["age_s"] is None else f"{st['age_s'] * 1000:.0f} ms"
            self._set_row(row, (stream, verdict.state, f"{st['rate_hz']:.0f} / {st['expected_rate_hz']:.0f} Hz", age,
                                str(st["seq_gaps"]), str(n_refused), str(n_rejected), st["tracking"], verdict.reason),
                          verdict.state)

    def update_from_review(self, states: dict[str, str]) -> None:
        """Rows from a recorded tick: each stream's interpolation status in /synced at that tick."""
        for row, stream in enumerate(self.streams):
            if stream in states:
                state = states[stream]
                colour = "ok" if state in ("interpolated", "nearest", "extrapolated") else "lost"
                self.states[stream] = colour
                self.levels[stream] = colour
                self._set_row(row, (stream, colour, "", "", "", "", "", "", f"recorded: {state}"), colour)


_PALETTE = pg.colormap.get("CET-C6").getLookupTable(0, 1, 9)


class Timeline(pg.PlotWidget):
    """The episode's subtask segments as coloured bars over time (seconds since the start)."""

    def __init__(self, on_seek=None):
        super().__init__(title="subtasks (s; click to seek in review)")
        self.setMaximumHeight(110)
        self.hideButtons()
        self.getPlotItem().hideAxis("left")
        self.setYRange(0, 1)
        self.setMouseEnabled(False, False)
        self._bars: dict = {}  # (start_ns, label) -> (bar, text, end_ns as drawn)
        self._t0_ns: int | None = None
        self.playhead = pg.InfiniteLine(pos=0, angle=90, pen=pg.mkPen("w", width=2))
        self.playhead.setVisible(False)
        self.addItem(self.playhead, ignoreBounds=True)
        self._on_seek = on_seek
        self.scene().sigMouseClicked.connect(self._clicked)

    def _clicked(self, event) -> None:
        if self._on_seek is not None and self.playhead.isVisible():
            self._on_seek(self.getPlotItem().vb.mapSceneToView(event.scenePos()).x())

    def set_playhead(self, seconds: float | None) -> None:
        """Show the review playhead at ``seconds`` since the episode start (None hides it)."""
        self.playhead.setVisible(seconds is not None)
        if seconds is not None:
            self.playhead.setPos(seconds)

    def show_segments(self, segments, t0_ns: int, t_now_ns: int, window_s: float | None = None) -> None:
        """Bars for ``segments`` (an open one runs to ``t_now_ns``); with ``window_s`` only the last that
        many seconds. Incremental: a bar is made once, when its segment appears, changed when its segment
        is, and removed when it leaves (rebuilding every bar at each mark cost ~1.5 ms a bar on the GUI
        thread, and painting a long take's hundreds of bars made frames late)."""
        if t0_ns != self._t0_ns:
            self._clear()
            self._t0_ns = t0_ns
        if window_s is not None:
            since = t_now_ns - int(window_s * 1e9)
            segments = [s for s in segments if s.end_ns < 0 or s.end_ns >= since]
        wanted = {(s.start_ns, s.label): s for s in segments}
        for key in [k for k in self._bars if k not in wanted]:
            bar, text, _ = self._bars.pop(key)
            self.removeItem(bar)
            self.removeItem(text)
        for key, s in wanted.items():
            start = (s.start_ns - t0_ns) / 1e9
            end = max(((s.end_ns if s.end_ns >= 0 else t_now_ns) - t0_ns) / 1e9, start + 0.01)
            entry = self._bars.get(key)
            if entry is None:
                colour = _PALETTE[zlib.crc32(s.label.encode()) % len(_PALETTE)]  # a label keeps its colour
                bar = pg.LinearRegionItem((start, end), movable=False, brush=pg.mkBrush(*colour[:3], 120))
                text = pg.TextItem(s.label + (" ..." if s.end_ns < 0 else ""), color="w", anchor=(0, 0.5))
                text.setPos(start, 0.5)
                self.addItem(bar)
                self.addItem(text)
                self._bars[key] = (bar, text, s.end_ns)
            elif entry[2] != s.end_ns or s.end_ns < 0:  # closed, moved, or still open and growing
                bar, text, _ = entry
                bar.setRegion((start, end))
                if entry[2] != s.end_ns:
                    text.setText(s.label + (" ..." if s.end_ns < 0 else ""))
                    self._bars[key] = (bar, text, s.end_ns)
        now_s = (t_now_ns - t0_ns) / 1e9
        self.setXRange(max(0.0, now_s - window_s) if window_s is not None else 0.0, max(5.0, now_s))

    def _clear(self) -> None:
        for bar, text, _ in self._bars.values():
            self.removeItem(bar)
            self.removeItem(text)
        self._bars = {}
