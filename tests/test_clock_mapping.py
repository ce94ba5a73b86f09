"""Device clock -> host clock mapping on synthetic clocks with offset, drift and positive transport delay."""

from __future__ import annotations

import numpy as np
import pytest

from capture_app.core.clock_mapping import ClockMapper


@pytest.mark.parametrize("drift_ppm", [0.0, 80.0, -40.0])
def test_offset_and_drift_are_recovered_despite_delay_jitter(drift_ppm):
    rng = np.random.default_rng(3)
    true_host = np.arange(0, 30e9, 1e9 / 30)                      # 30 fps for 30 s
    device = (true_host * (1 + drift_ppm * 1e-6) + 5e12).astype(np.int64)
    delay = 2e6 + rng.exponential(3e6, size=len(true_host))         # >= 2 ms, mostly a few ms
    arrival = (true_host + 7e11 + delay).astype(np.int64)           # host clock has its own origin
    mapper = ClockMapper()
    errors = []
    for d, a, t in zip(device, arrival, true_host):
        mapper.add(d, a)
        errors.append(mapper.to_host(d) - (t + 7e11))
    late = np.array(errors[len(errors) // 2:])
    # the stamp lands on the capture instant plus the minimum delay (2 ms), which a latency offset removes
    assert np.all(np.abs(late - 2e6) < 0.5e6), (late.min(), late.max())
    assert mapper.estimate.drift_ppm == pytest.approx(-drift_ppm, abs=3.0)  # host runs slower than device
    assert mapper.describe()["windows"] >= 25


def test_mapping_is_unaffected_by_arrival_jitter_unlike_arrival_stamps():
    rng = np.random.default_rng(4)
    true_host = np.arange(0, 10e9, 1e9 / 100)
    arrival = true_host + 1e6 + rng.uniform(0, 8e6, len(true_host))
    mapper = ClockMapper()
    for d, a in zip(true_host, arrival):
        mapper.add(int(d), int(a))
    mapped = np.array([mapper.to_host(int(d)) for d in true_host[-200:]]) - true_host[-200:]
    assert np.ptp(mapped) < 0.3e6 and np.ptp(arrival[-200:] - true_host[-200:]) > 6e6


def _mapped(device_ns, arrival_ns) -> ClockMapper:
    mapper = ClockMapper()
    for d, a in zip(device_ns, arrival_ns):
        mapper.add(int(d), int(a))
    return mapper


def test_the_envelope_residual_sees_a_stepping_clock_but_not_the_transport_jitter():
    rng = np.random.default_rng(5)
    host = np.arange(0, 30e9, 1e9 / 60)                      # a 60 Hz device for 30 s
    jitter = 1e6 + rng.exponential(3e6, size=len(host))       # p95 near 10 ms: a glove dongle on a busy host
    device = host * (1 + 50e-6) + 3e12
    steady = _mapped(device, host + jitter).describe()
    assert steady["residual_p95_ms"] > 8.0                    # the jitter is there, and reported
    assert steady["envelope_residual_ms"] < 0.3, steady       # but the clock maps onto a line
    stepping = device + np.where(host > 15e9, 6e6, 0.0)       # the device clock steps by 6 ms halfway
    stepped = _mapped(stepping, host + jitter).describe()
    assert stepped["envelope_residual_ms"] > 1.0, stepped
    few = _mapped(device[:90], (host + jitter)[:90]).describe()  # 1.5 s: fewer than three windows
    assert few["envelope_residual_ms"] is None


def test_the_rig_check_judges_a_clock_by_its_envelope_and_resets_not_by_its_jitter():
    from capture_app.recorder.rig_check import _clocks
    jittery = {"offset_ns": 1, "drift_ppm": 50.0, "residual_p95_ms": 11.0, "envelope_residual_ms": 0.1, "resets": 0}
    stepping = dict(jittery, envelope_residual_ms=2.5)
    reset = dict(jittery, resets=1)
    assert _clocks({"left_glove": {"clock": jittery}, "ego_camera": {}}).passed
    line = _clocks({"left_glove": {"clock": jittery}, "top_camera": {"clock": stepping}})
    assert not line.passed and "top_camera" in line.text and "USB" in line.fix
    assert not _clocks({"right_glove": {"clock": reset}}).passed
    assert _clocks({}).passed and "no device clock" in _clocks({}).text


def test_a_device_clock_that_jumps_back_restarts_the_fit():
    mapper = ClockMapper()
    for k in range(100):
        mapper.add(10_000_000_000 + k * 33_000_000, 500 + k * 33_000_000)
    mapper.add(1_000, 4_000_000_000)  # device rebooted
    assert mapper.to_host(1_000) == 4_000_000_000


def test_doctor_live_judges_rate_jitter_and_silence():
    from capture_app.tools.doctor_live import measure_stream
    period = 33_333_333
    good = measure_stream("top_camera", 30, [k * period for k in range(90)], ["ok"] * 90,
                          {"timestamp_domain": "realsense:hardware_clock", "clock": {"offset_ns": 5_000_000}}, 3.0)
    assert good.problems == [] and good.rate_hz == pytest.approx(30) and good.offset_ms == pytest.approx(5.0)
    slow = measure_stream("top_camera", 30, [k * 2 * period for k in range(45)], ["ok"] * 45, {}, 3.0)
    assert any("rate 15.0 Hz" in p for p in slow.problems) and slow.timestamp_domain.startswith("host arrival")
    jittery = measure_stream("x", 30, [k * period + (k % 2) * 15_000_000 for k in range(90)], ["ok"] * 90, {}, 3.0)
    assert any("jitter" in p for p in jittery.problems)
    assert measure_stream("x", 30, [], [], {}, 3.0).problems == ["no sample arrived: see the driver error above"]
