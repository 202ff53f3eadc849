"""systemd, one module per concept: unit names, unit files, env files, drop-ins, the generator,
sd_notify, the journal, and device isolation through the unit's cgroup."""
