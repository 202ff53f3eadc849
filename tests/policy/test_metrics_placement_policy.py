"""The `metrics:` section and `placement:` (top level and per service): defaults, what each reads
as, and every mistake named by file:line:column and key path, never a traceback."""

import pytest

from cortex_hook.model import MetricsPolicy

from .reading import PATH, mistake, parse


def test_defaults_serve_nothing_and_pack():
    pol = parse("version: 1\nservices:\n  - match: a\n")
    assert pol.metrics == MetricsPolicy() and pol.metrics.listen_host is None and pol.metrics.job_mapping_dir is None
    assert pol.placement == "pack" and pol.services[0].placement is None


def test_every_key_reads_as_written():
    pol = parse("""\
        version: 1
        placement: spread
        metrics:
          listen: "[::1]:9772"
          job_mapping_dir: /run/cortex-hook//dcgm-job-map/
        services:
          - match: a
            placement: pack
        """)
    assert (pol.metrics.listen_host, pol.metrics.listen_port) == ("::1", 9772)
    assert pol.metrics.job_mapping_dir == "/run/cortex-hook/dcgm-job-map"
    assert pol.placement == "spread" and pol.services[0].placement == "pack"
    remote = parse("version: 1\nmetrics:\n  listen: 10.0.0.5:9772\n  allow_remote: true\n").metrics
    assert (remote.listen_host, remote.listen_port) == ("10.0.0.5", 9772)


@pytest.mark.parametrize("text, where, key, needle", [
    ("metrics:\n  listen: 10.0.0.5:9772\n", "3:11", "metrics.listen", "not a loopback address"),
    ("metrics:\n  listen: 0.0.0.0:9772\n  allow_remote: false\n", "3:11", "metrics.listen", "allow_remote: true"),
    ("metrics:\n  listen: host.example:9772\n", "3:11", "metrics.listen", "expected HOST:PORT"),
    ("metrics:\n  listen: 127.0.0.1:65536\n", "3:11", "metrics.listen", "expected HOST:PORT"),
    ("metrics:\n  listen: 300.1.1.1:80\n", "3:11", "metrics.listen", "not an IP address"),
    ("metrics:\n  job_mapping_dir: run/map\n", "3:20", "metrics.job_mapping_dir", "absolute directory"),
    ("metrics:\n  job_mapping_dir: /run/../etc\n", "3:20", "metrics.job_mapping_dir", "absolute directory"),
    ("metrics:\n  listne: 127.0.0.1:1\n", "3:3", "metrics.listne", "did you mean 'listen'"),
    ("placement: binpack\n", "2:12", "placement", "pack"),
    ("services:\n  - match: a\n    placement: fill\n", "4:16", "services[0].placement", "spread"),
])
def test_every_mistake_names_file_line_column_and_key(text, where, key, needle):
    message = mistake("version: 1\n" + text)
    assert message.startswith(f"{PATH}:{where}: {key}: "), message
    assert needle in message, message
