"""Servers in containers (issue 14, in progress): the engine's command line split into its parts."""
