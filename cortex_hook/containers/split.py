"""A container engine's command line (podman, docker), split: what comes before the engine (`/usr/bin/env …`), the
engine and its global options, the subcommand (`run`, `create`), the container options, the image,
and the container's own command.

Only the engine's own option tables decide whether an option takes a value (podman_options.py,
from the real podman CLI; docker_options.py, from docker's reference docs); an option they do not list is refused by name, since guessing would
take an option's value for the image (or the image for a value). `-d`/`--detach` is refused: the
wrapper must own the server's process. Words are kept exactly as given, never re-split, so
`join(split(argv)) == argv`.
"""

import os

from ..errors import UsageError
from ..records import Record, new
from . import docker_options, podman_options

ENGINES = {"podman": (podman_options, "podman 4.3.1's `--help`"),
           "docker": (docker_options, "docker/cli's reference docs")}


def _subcommands(tables):
    """{subcommand words: (options taking a value, switches)} of an engine's TABLES module."""
    run, create = (tables.RUN_VALUE, tables.RUN_SWITCH), (tables.CREATE_VALUE, tables.CREATE_SWITCH)
    return {("run",): run, ("create",): create, ("container", "run"): run, ("container", "create"): create}


class Option(Record):
    """One engine option as given: its NAME (`--device`, `-p`), its VALUE (None: a switch given
    without one), and the WORDS of the command line it took (`--env=A=b`, or `-e`, `A=b`)."""

    name: str
    value: str | None = None
    words: list[str] = new(list)


class Split(Record):
    """A container engine's command line, in its parts (join() puts them back)."""

    prefix: list[str] = new(list)  # `/usr/bin/env NAME=VALUE …` before the engine
    engine: str = ""  # as given (`podman`, `/usr/bin/podman`)
    global_options: list[Option] = new(list)
    subcommand: list[str] = new(list)  # ["run"], ["container", "create"], …
    options: list[Option] = new(list)
    separator: bool = False  # a `--` before the image
    image: str = ""
    command: list[str] = new(list)  # the container's own command (the server's argv inside)

    @property
    def name(self):
        """The engine's name: `podman` or `docker`."""
        return os.path.basename(self.engine)


def engine_at(argv):
    """The index of the container engine in ARGV (after `env` and its NAME=VALUE words), or None."""
    i = 0
    if argv and os.path.basename(argv[0]) == "env":
        i = 1
        while i < len(argv) and "=" in argv[i] and not argv[i].startswith("-"):
            i += 1
    return i if i < len(argv) and os.path.basename(argv[i]) in ENGINES else None


def split(argv):
    """ARGV in its parts (a Split), or None when it does not run a container engine's `run` or
    `create`. UsageError: an option the engine's table does not know, `--detach`, no image."""
    at = engine_at(argv)
    if at is None:
        return None
    out = Split(prefix=list(argv[:at]), engine=argv[at])
    tables, source = ENGINES[out.name]
    i = _options(argv, at + 1, tables.GLOBAL_VALUE, tables.GLOBAL_SWITCH, out.global_options,
                 f"{out.name} (global)", source)
    for words, found in _subcommands(tables).items():
        if tuple(argv[i:i + len(words)]) == words:
            out.subcommand, options = list(words), found
            break
    else:
        rest = [w for w in argv[i:i + 2] if not w.startswith("-")]
        if rest[:1] == ["start"] or rest[:2] == ["container", "start"]:
            raise UsageError(f"{out.name} start: the container was made by another command, so its GPUs "
                             "cannot be set here; put `cdi: true` on the service and `--device "
                             "cortex-hook.local/gpu=%n` in its `create` (env mode), or run it with `run`")
        return None  # (podman ps, podman exec, …: not a command that makes a container)
    where = f"{out.name} {' '.join(out.subcommand)}"
    i = _options(argv, i + len(out.subcommand), *options, out.options, where, source)
    if i < len(argv) and argv[i] == "--":
        out.separator, i = True, i + 1
    if i >= len(argv):
        raise UsageError(f"{where}: no image in the command line")
    out.image, out.command = argv[i], list(argv[i + 1:])
    for option in out.options:
        if option.name in ("-d", "--detach") and option.value not in ("false", "False", "0"):
            raise UsageError(f"{where}: {option.words[0]} (detach) cannot be wrapped: cortex-hook must own the "
                             "server's process to report it ready and give its GPUs back when it ends; "
                             "drop it (systemd keeps the container in the foreground)")
    return out


def _options(argv, i, value, switch, out, where, source):
    """Read the options of ARGV from I into OUT ([Option]); returns the index after them (SOURCE:
    where the tables come from, for a refusal)."""
    while i < len(argv):
        word = argv[i]
        if word == "--" or not word.startswith("-") or word == "-":
            return i
        if word.startswith("--"):
            name, eq, given = word.partition("=")
            if name in value:
                if eq:
                    out.append(Option(name, given, [word]))
                else:
                    _need(argv, i, word, where)
                    out.append(Option(name, argv[i + 1], [word, argv[i + 1]]))
                    i += 1
            elif name in switch:
                out.append(Option(name, given if eq else None, [word]))
            else:
                _unknown(name, where, source)
            i += 1
            continue
        i = _cluster(argv, i, value, switch, out, where, source)
    return i


def _cluster(argv, i, value, switch, out, where, source):
    """Short options, clustered or not (`-it`, `-p8080:80`, `-p=8080:80`, `-p 8080:80`)."""
    word = argv[i]
    for j in range(1, len(word)):
        name = "-" + word[j]
        if name in switch:
            out.append(Option(name, None, [word] if j == 1 else []))
            continue
        if name not in value:
            _unknown(name, where, source)
        rest = word[j + 1:]
        if rest:  # pflag: `-p=8080:80` is `-p 8080:80`
            out.append(Option(name, rest[1:] if rest.startswith("=") else rest, [word] if j == 1 else []))
            return i + 1
        _need(argv, i, word, where)
        out.append(Option(name, argv[i + 1], ([word] if j == 1 else []) + [argv[i + 1]]))
        return i + 2
    return i + 1


def _need(argv, i, word, where):
    if i + 1 >= len(argv):
        raise UsageError(f"{where}: {word} needs a value")


def _unknown(name, where, source):
    raise UsageError(f"{where}: option {name} is not in cortex-hook's table of its options ({source}), "
                     "so where its value ends cannot be known; check its spelling, or report it")


def join(parts):
    """The command line PARTS (a Split) stands for: prefix, engine, options, image, command."""
    argv = list(parts.prefix) + [parts.engine]
    for option in parts.global_options:
        argv.extend(option.words)
    argv.extend(parts.subcommand)
    for option in parts.options:
        argv.extend(option.words)
    return argv + (["--"] if parts.separator else []) + [parts.image] + list(parts.command)
