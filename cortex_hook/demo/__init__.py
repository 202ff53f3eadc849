"""The embedded demo: a simulated box (gpus.yaml) and a sample policy (policy.yaml)."""
