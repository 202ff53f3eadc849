"""The command lines installed drop-ins write, read without argparse.

`[--policy F] [--state F] [--runtime-dir D] allocate|release UNIT` runs at every start and stop
of every server; importing argparse and building a parser for it costs more than reading these
few words. Anything else, --help included, goes to argparse (cli/parser.py); a test holds the
two readings equal.
"""

START_PATH_COMMANDS = ("allocate", "release")  # what every unit's lease unit runs
GLOBAL_OPTIONS = {"--policy": "policy", "--state": "state", "--runtime-dir": "runtime_dir"}


class Args:
    """What argparse would return, for the command lines `start_path_args` reads."""

    def __init__(self, **values):
        self.__dict__.update(values)


def command_of(argv):
    """The subcommand word in ARGV (after the global options), or None."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in GLOBAL_OPTIONS:
            i += 2
            continue
        if not word.startswith("-"):
            return word
        i += 1
    return None


def start_path_args(argv):
    """The parsed ARGV if it is `[--policy F] [--state F] [--runtime-dir D] allocate|release UNIT`
    (each option one separate value word, as installed drop-ins write them), else None."""
    values = dict.fromkeys(GLOBAL_OPTIONS.values())
    i = 0
    while i + 1 < len(argv) and argv[i] in GLOBAL_OPTIONS and not argv[i + 1].startswith("-"):
        values[GLOBAL_OPTIONS[argv[i]]] = argv[i + 1]
        i += 2
    rest = argv[i:]
    if len(rest) != 2 or rest[0] not in START_PATH_COMMANDS or rest[1].startswith("-"):
        return None
    values.update(command=rest[0], unit=rest[1])
    if rest[0] == "allocate":
        values.update(json=False, holder_pid=None)
    return Args(**values)
