"""`cortex-hook monitor`: the runtime half. A host daemon that watches every GPU (NVML events, and
a poll of the health checks `allocate` uses), drains a GPU that fails, restarts (or stops) the
units leasing it so that they start again on healthy GPUs, and brings a recovered GPU back.

events.py (the NVML event set), faults.py (what counts as fatal), actions.py (drain, act on the
units, recover), daemon.py (the loop, systemd's watchdog, the status file).
"""
