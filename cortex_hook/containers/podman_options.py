"""podman's own option tables (podman 4.3.1, Debian 12): which options of `podman run` and
`podman create` take a value, which are switches, and podman's global options. Generated from
`podman run --help`, `podman create --help` and `podman --help` (options_from_help);
tests/containers/test_podman_options.py holds them against the real podman CLI where it is
installed. An option missing here is refused by the splitter (containers/split.py), never guessed.
"""

import re

_HELP_LINE = re.compile(r"^\s+(?:-(\w), )?--([\w-]+)(?: (\S+))?(?:\s{2,}|\s*$)")


def options_from_help(text):
    """(options that take a value, switches) from a cobra `--help` TEXT: `-s, --long TYPE  text`
    takes a value (TYPE: string, strings, uint, ARCH, …); `--long  text` is a switch."""
    value, switch = set(), set()
    for line in text.splitlines():
        m = _HELP_LINE.match(line)
        if m:
            short, long, kind = m.groups()
            names = {f"--{long}"} | ({f"-{short}"} if short else set())
            (value if kind else switch).update(names)
    return frozenset(value), frozenset(switch)


RUN_VALUE = frozenset({  # `podman run` options that take a value
    '--add-host', '--annotation', '--arch', '--attach', '--authfile', '--blkio-weight',
    '--blkio-weight-device', '--cap-add', '--cap-drop', '--cgroup-conf', '--cgroup-parent', '--cgroupns',
    '--cgroups', '--chrootdirs', '--cidfile', '--conmon-pidfile', '--cpu-period', '--cpu-quota',
    '--cpu-rt-period', '--cpu-rt-runtime', '--cpu-shares', '--cpus', '--cpuset-cpus', '--cpuset-mems',
    '--detach-keys', '--device', '--device-cgroup-rule', '--device-read-bps', '--device-read-iops',
    '--device-write-bps', '--device-write-iops', '--dns', '--dns-option', '--dns-search', '--entrypoint',
    '--env', '--env-file', '--env-merge', '--expose', '--gidmap', '--group-add', '--health-cmd',
    '--health-interval', '--health-on-failure', '--health-retries', '--health-start-period',
    '--health-timeout', '--hostname', '--hostuser', '--image-volume', '--init-path', '--ip', '--ip6', '--ipc',
    '--label', '--label-file', '--log-driver', '--log-opt', '--mac-address', '--memory',
    '--memory-reservation', '--memory-swap', '--memory-swappiness', '--mount', '--name', '--network',
    '--network-alias', '--oom-score-adj', '--os', '--passwd-entry', '--personality', '--pid', '--pidfile',
    '--pids-limit', '--platform', '--pod', '--pod-id-file', '--preserve-fds', '--publish', '--pull',
    '--requires', '--restart', '--sdnotify', '--seccomp-policy', '--secret', '--security-opt', '--shm-size',
    '--stop-signal', '--stop-timeout', '--subgidname', '--subuidname', '--sysctl', '--systemd', '--timeout',
    '--tmpfs', '--tz', '--uidmap', '--ulimit', '--umask', '--unsetenv', '--user', '--userns', '--uts',
    '--variant', '--volume', '--volumes-from', '--workdir', '-a', '-c', '-e', '-h', '-l', '-m', '-p', '-u',
    '-v', '-w',
})

RUN_SWITCH = frozenset({  # `podman run` switches (`--rm`, `--rm=false`)
    '--detach', '--disable-content-trust', '--env-host', '--help', '--http-proxy', '--init', '--interactive',
    '--no-healthcheck', '--no-hosts', '--oom-kill-disable', '--passwd', '--privileged', '--publish-all',
    '--quiet', '--read-only', '--read-only-tmpfs', '--replace', '--rm', '--rmi', '--rootfs', '--sig-proxy',
    '--tls-verify', '--tty', '--unsetenv-all', '-P', '-d', '-i', '-q', '-t',
})

CREATE_VALUE = frozenset({  # `podman create`
    '--add-host', '--annotation', '--arch', '--attach', '--authfile', '--blkio-weight',
    '--blkio-weight-device', '--cap-add', '--cap-drop', '--cgroup-conf', '--cgroup-parent', '--cgroupns',
    '--cgroups', '--chrootdirs', '--cidfile', '--conmon-pidfile', '--cpu-period', '--cpu-quota',
    '--cpu-rt-period', '--cpu-rt-runtime', '--cpu-shares', '--cpus', '--cpuset-cpus', '--cpuset-mems',
    '--device', '--device-cgroup-rule', '--device-read-bps', '--device-read-iops', '--device-write-bps',
    '--device-write-iops', '--dns', '--dns-option', '--dns-search', '--entrypoint', '--env', '--env-file',
    '--env-merge', '--expose', '--gidmap', '--group-add', '--health-cmd', '--health-interval',
    '--health-on-failure', '--health-retries', '--health-start-period', '--health-timeout', '--hostname',
    '--hostuser', '--image-volume', '--init-ctr', '--init-path', '--ip', '--ip6', '--ipc', '--label',
    '--label-file', '--log-driver', '--log-opt', '--mac-address', '--memory', '--memory-reservation',
    '--memory-swap', '--memory-swappiness', '--mount', '--name', '--network', '--network-alias',
    '--oom-score-adj', '--os', '--passwd-entry', '--personality', '--pid', '--pidfile', '--pids-limit',
    '--platform', '--pod', '--pod-id-file', '--publish', '--pull', '--requires', '--restart', '--sdnotify',
    '--seccomp-policy', '--secret', '--security-opt', '--shm-size', '--stop-signal', '--stop-timeout',
    '--subgidname', '--subuidname', '--sysctl', '--systemd', '--timeout', '--tmpfs', '--tz', '--uidmap',
    '--ulimit', '--umask', '--unsetenv', '--user', '--userns', '--uts', '--variant', '--volume',
    '--volumes-from', '--workdir', '-a', '-c', '-e', '-h', '-l', '-m', '-p', '-u', '-v', '-w',
})

CREATE_SWITCH = frozenset({  # `podman create`
    '--disable-content-trust', '--env-host', '--help', '--http-proxy', '--init', '--interactive',
    '--no-healthcheck', '--no-hosts', '--oom-kill-disable', '--privileged', '--publish-all', '--quiet',
    '--read-only', '--read-only-tmpfs', '--replace', '--rm', '--rootfs', '--tls-verify', '--tty',
    '--unsetenv-all', '-P', '-i', '-q', '-t',
})

GLOBAL_VALUE = frozenset({  # `podman --help`: before the subcommand
    '--cgroup-manager', '--conmon', '--connection', '--events-backend', '--hooks-dir', '--identity',
    '--log-level', '--namespace', '--network-cmd-path', '--network-config-dir', '--root', '--runroot',
    '--runtime', '--runtime-flag', '--ssh', '--storage-driver', '--storage-opt', '--tmpdir', '--url',
    '--volumepath', '-c',
})

GLOBAL_SWITCH = frozenset({  # `podman --help`
    '--help', '--noout', '--remote', '--syslog', '--version', '-r', '-v',
})
