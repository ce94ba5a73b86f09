"""The recorder's bus endpoints (docs/protocol.md, "Trust model"): the checks before anything binds, the
subscribers (the local bus, one per driver running elsewhere, each with the streams and driver statuses it may
carry), and keys and clock synchronisation for drivers on other hosts."""

from __future__ import annotations

import zmq

from capture_app.bus.endpoint_trust import require_private_ipc
from capture_app.bus.sockets import BusSubscriber
from capture_app.core.errors import ConfigError
from capture_app.rig.config import RigConfig


def check_endpoints(config: RigConfig) -> None:
    """Refuse an endpoint another local user could bind or reach: ConfigError saying which and how to fix it."""
    for d in config.drivers:
        require_private_ipc(d.endpoint, f"driver {d.name!r} endpoint")
    if not config.bus_endpoint.startswith(("inproc://", "ipc://")):
        raise ConfigError(f"[bus] endpoint {config.bus_endpoint}: the app's own bus takes inproc:// or ipc:// "
                          f"in a directory only you can use (any local user could publish on a tcp:// one); "
                          f"drivers elsewhere bind their own endpoint (docs/protocol.md, Trust model)")
    require_private_ipc(config.bus_endpoint, "[bus] endpoint")


def remote_keys(config: RigConfig):
    """The CurveZMQ keys of ``[bus] keys`` (None without); refuses a tcp:// driver endpoint without them."""
    from capture_app.bus.remote import load_keys
    keys = None
    if config.bus_keys_dir:
        keys = load_keys(f"{config.bus_keys_dir}/app.key_secret", f"{config.bus_keys_dir}/driver.key")
    for d in config.drivers:
        if d.endpoint and d.endpoint.startswith("tcp://") and keys is None:  # loopback too: any local user can bind it
            raise ConfigError(f"driver {d.name!r} at {d.endpoint}: tcp:// needs CurveZMQ keys, on loopback too "
                              f"(another local user could bind the port first); set [bus] keys to the directory "
                              f"from `capture-app keys`, or use ipc:// in a directory only you can use "
                              f"(docs/protocol.md, Trust model)")
    return keys


def remote_clocks(config: RigConfig, context: zmq.Context, keys) -> tuple[dict, dict]:
    """Clock clients for drivers on other hosts: (driver name -> ClockClient, stream -> ClockClient)."""
    from capture_app.bus.remote import ClockClient, clock_endpoint
    clients, of_stream = {}, {}
    for d in config.drivers:
        if not d.endpoint or not d.needs_clock_sync:  # same host (ipc://, loopback): stamps kept as sent
            continue
        curve = keys if d.endpoint.startswith("tcp://") else None
        client = clients[d.name] = ClockClient(d.name, clock_endpoint(d.endpoint), context, curve)
        for stream in d.streams:
            of_stream[stream] = client
    return clients, of_stream


def open_subscribers(config: RigConfig, context: zmq.Context, local_endpoints: list[str], keys) -> list[tuple]:
    """``[(subscriber, streams it may carry, drivers whose status it may carry)]``: the local bus (bound) for
    the drivers without an endpoint, then one connected subscriber per driver with one."""
    local = BusSubscriber(bind=local_endpoints, context=context)
    out = [(local, frozenset(s for d in config.drivers if not d.endpoint for s in d.streams),
            frozenset(d.name for d in config.drivers if not d.endpoint))]
    for d in config.drivers:
        if d.endpoint:
            curve = keys if d.endpoint.startswith("tcp://") and keys else None
            out.append((BusSubscriber(connect=[d.endpoint], context=context, curve=curve), frozenset(d.streams),
                        frozenset([d.name])))
    return out
