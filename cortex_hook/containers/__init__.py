"""Servers in containers: an engine's command line split into its parts (split), given exactly the
chosen GPUs (rewrite), and env mode's CDI device of its own (cdispec)."""
