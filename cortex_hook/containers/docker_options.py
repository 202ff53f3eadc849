"""docker's own option tables: which options of `docker run` and `docker create` take a value,
which are switches, and docker's global options. Read from docker/cli's reference docs
(docs/reference/commandline/container_run.md, container_create.md, docker.md at commit 28f756087e,
2026: the options tables, whose `Type` column is `bool` for a switch) by options_from_docs; there
is no docker here to ask. An option missing here is refused by the splitter, never guessed.
"""

import re

_ROW = re.compile(r"^\|\s*(.+?)\s*\|\s*`([^`]+)`\s*\|")
_NAMES = re.compile(r"`(-{1,2}[\w-]+)`")


def options_from_docs(markdown):
    """(options that take a value, switches) from the options table of a docker/cli reference page
    (MARKDOWN): the `Name` cell's `-s`/`--long`, the `Type` cell `bool` or another type."""
    value, switch = set(), set()
    for line in markdown.splitlines():
        m = _ROW.match(line)
        if m:
            names = set(_NAMES.findall(m.group(1)))
            (switch if m.group(2) == "bool" else value).update(names)
    return frozenset(value), frozenset(switch)


RUN_VALUE = frozenset({  # `docker run` options that take a value
    '--add-host', '--annotation', '--attach', '--blkio-weight', '--blkio-weight-device', '--cap-add',
    '--cap-drop', '--cgroup-parent', '--cgroupns', '--cidfile', '--cpu-count', '--cpu-percent', '--cpu-period',
    '--cpu-quota', '--cpu-rt-period', '--cpu-rt-runtime', '--cpu-shares', '--cpus', '--cpuset-cpus',
    '--cpuset-mems', '--detach-keys', '--device', '--device-cgroup-rule', '--device-read-bps',
    '--device-read-iops', '--device-write-bps', '--device-write-iops', '--dns', '--dns-option', '--dns-search',
    '--domainname', '--entrypoint', '--env', '--env-file', '--expose', '--gpus', '--group-add', '--health-cmd',
    '--health-interval', '--health-retries', '--health-start-interval', '--health-start-period',
    '--health-timeout', '--hostname', '--io-maxbandwidth', '--io-maxiops', '--ip', '--ip6', '--ipc',
    '--isolation', '--label', '--label-file', '--link', '--link-local-ip', '--log-driver', '--log-opt',
    '--mac-address', '--memory', '--memory-reservation', '--memory-swap', '--memory-swappiness', '--mount',
    '--name', '--network', '--network-alias', '--oom-score-adj', '--pid', '--pids-limit', '--platform',
    '--publish', '--pull', '--restart', '--runtime', '--security-opt', '--shm-size', '--stop-signal',
    '--stop-timeout', '--storage-opt', '--sysctl', '--tmpfs', '--ulimit', '--user', '--userns', '--uts',
    '--volume', '--volume-driver', '--volumes-from', '--workdir', '-a', '-c', '-e', '-h', '-l', '-m', '-p',
    '-u', '-v', '-w',
})

RUN_SWITCH = frozenset({  # `docker run` switches
    '--detach', '--help', '--init', '--interactive', '--no-healthcheck', '--oom-kill-disable', '--privileged',
    '--publish-all', '--quiet', '--read-only', '--rm', '--sig-proxy', '--tty', '--use-api-socket', '-P', '-d',
    '-i', '-q', '-t',
})

CREATE_VALUE = RUN_VALUE - {"--detach-keys"}  # `docker create`: run's, less what only a run has

CREATE_SWITCH = RUN_SWITCH - {"--detach", "-d", "--sig-proxy"}  # `docker create`

GLOBAL_VALUE = frozenset({  # `docker`: before the subcommand
    '--config', '--context', '--host', '--log-level', '--tlscacert', '--tlscert', '--tlskey', '-H', '-c', '-l',
})

GLOBAL_SWITCH = frozenset({  # `docker`
    '--debug', '--tls', '--tlsverify', '-D',
})
