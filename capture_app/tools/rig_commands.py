"""The commands that set up a rig: ``driver``, ``keys``, ``doctor`` (capture_app.cli parses them).

Exit statuses as in ``capture_app.cli``."""

from __future__ import annotations

import logging
import os
import sys

from capture_app.core.errors import ConfigError
from capture_app.tools.live_commands import load_rig

log = logging.getLogger("capture_app")


def cmd_driver(args) -> int:
    from drivers.host import run_drivers

    config = load_rig(args)
    names = [d.name for d in config.drivers if not d.endpoint] if args.all else args.names
    if not names:
        raise ConfigError("name at least one driver (or --all); configured: "
                          + ", ".join(d.name for d in config.drivers))
    for name in names:
        config.driver(name)  # ConfigError naming the known drivers
    endpoint = args.publish or args.connect
    if args.nice is not None and args.nice > os.getpriority(os.PRIO_PROCESS, 0):
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # lowering priority is always allowed
    return run_drivers(config, names, endpoint, bind=bool(args.publish), parent_pid=args.parent_pid,
                       duration_s=args.duration, keys_dir=args.keys, parent_pipe=args.parent_pipe)


def cmd_keys(args) -> int:
    from capture_app.bus.remote import generate_keys

    for name, path in generate_keys(args.directory).items():
        print(f"{name}: {path}")
    print(f"Secret keys are 0600 in a 0700 directory; copy each only where it is used: driver.key_secret + app.key to a "
          f"driver host (`capture-app driver NAME --publish tcp://0.0.0.0:PORT --keys DIR`), monitor.key_secret + "
          f"app.key to a monitor (`capture-app monitor --connect tcp://... --keys DIR`); the recorder's rig config "
          f"sets [bus] keys = \"{args.directory}\" (app.key_secret, driver.key, monitor.key).")
    return 0


def cmd_doctor(args) -> int:
    from capture_app.tools.doctor import format_checks, run_doctor

    config = load_rig(args)
    checks, all_present = run_doctor(config)
    print(f"rig {config.name} ({config.source_path})")
    print(format_checks(checks))
    if not all_present:
        print("Some configured devices are not usable: see FAIL above.", file=sys.stderr)
    if args.live:
        from capture_app.tools.doctor_live import format_timings, live_check
        print(f"\nstreaming {args.seconds:g} s from each device:")
        timings, errors = live_check(config, args.seconds, include_simulated=args.include_sim)
        print(format_timings(timings, errors))
        all_present = all_present and not errors and not any(t.problems for t in timings)
    return 0 if all_present else 1
