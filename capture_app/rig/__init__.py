"""What the rig is and how its processes are started: the rig config, task templates, CPU priority and
child processes of this package's own commands."""
