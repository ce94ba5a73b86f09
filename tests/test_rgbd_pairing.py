"""Pairing colour with depth frames (pure): every colour frame once, with the nearest depth within half a period."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.rgbd_pairing import Frame, FramePairer

PERIOD_MS = 1000 / 30


@settings(max_examples=200, deadline=None)
@given(offset_ms=st.floats(-15, 15), drop_color=st.sets(st.integers(0, 29)), drop_depth=st.sets(st.integers(0, 29)),
       depth_first=st.booleans())
def test_each_colour_frame_is_released_once_with_its_own_depth_or_none(offset_ms, drop_color, drop_depth, depth_first):
    pairer = FramePairer(30)
    released = []
    for k in range(30):
        t = 1000 + k * PERIOD_MS
        arrival = int(t * 1e6)
        color = Frame(k, t, arrival) if k not in drop_color else None
        depth = Frame(k, t + offset_ms, arrival + int(abs(offset_ms) * 1e6)) if k not in drop_depth else None
        for frame, add in sorted([(depth, pairer.add_depth), (color, pairer.add_color)],
                                 key=lambda x: 0 if (x[1] == pairer.add_depth) == depth_first else 1):
            if frame is not None:
                add(frame)
        released += pairer.ready(arrival)
    released += pairer.ready(0, flush=True)
    assert [c.number for c, _ in released] == [k for k in range(30) if k not in drop_color]
    for color, depth in released:
        if color.number in drop_depth:
            assert depth is None
        else:
            assert depth is not None and depth.number == color.number


def test_a_colour_frame_waits_for_its_depth_then_gives_up_after_the_wait():
    pairer = FramePairer(30, wait_ns=50_000_000)
    pairer.add_color(Frame(0, 1000.0, 0))
    assert pairer.ready(10_000_000) == [] and pairer.waiting == 1
    [(color, depth)] = pairer.ready(60_000_000)
    assert color.number == 0 and depth is None
