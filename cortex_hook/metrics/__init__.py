"""What cortex-hook tells Prometheus and dcgm-exporter: the exposition (collect.py,
exposition.py), the monitor's /metrics endpoint (server.py), and dcgm-exporter's HPC job mapping
(jobmap.py)."""
