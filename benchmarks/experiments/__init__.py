"""Experiments: the daemon with one proposed change applied at start-up, for load.py's --daemon-cmd.

Nothing here changes acwd itself; each script patches the running process and then runs the
acwd CLI, so a proposal can be measured against the same build before anyone edits acwd/.
"""
