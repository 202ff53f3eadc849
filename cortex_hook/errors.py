"""Every failure the CLI reports, each with its documented exit code.

The codes follow sysexits(3) so that a unit's `SuccessExitStatus=`/`RestartPreventExitStatus=`
can tell them apart. The CLI turns any of these into one line on stderr and its exit code.
"""

EXIT_OK = 0
EXIT_USAGE = 2          # bad command line, bad unit name, unknown GPU
EXIT_UNAVAILABLE = 69   # no GPU satisfies the service (EX_UNAVAILABLE)
EXIT_SOFTWARE = 70      # a bug in cortex-hook or a plugin (EX_SOFTWARE)
EXIT_CANTCREAT = 73     # cannot write the env file / drop-in (EX_CANTCREAT)
EXIT_STATE = 74         # state database unreadable, corrupt or from a newer version (EX_IOERR)
EXIT_TIMEOUT = 75       # driver discovery timed out, or `wait` gave up (EX_TEMPFAIL)
EXIT_NOPERM = 77        # a file that decides what root does is writable by others, or root is needed (EX_NOPERM)
EXIT_CONFIG = 78        # bad policy (EX_CONFIG)


def one_line(text):
    """TEXT with every line break and control character shown as an escape: errors stay one line
    whatever a file, key or driver puts in them."""
    out = []
    for ch in str(text):
        if ch in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029" or ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def did_you_mean(word, choices):
    """` (did you mean 'x'?)` when WORD is close to one of CHOICES, else ``."""
    names = [str(c) for c in choices]
    same_but_case = [n for n in names if n.lower() == str(word).lower()]
    if same_but_case:
        return f" (did you mean {same_but_case[0]!r}?)"
    import difflib  # error paths only
    close = difflib.get_close_matches(str(word), names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class CortexError(Exception):
    """Base of every expected failure; `str()` is the one-line message."""

    exit_code = EXIT_SOFTWARE

    def __str__(self):
        return one_line(super().__str__())


class UsageError(CortexError):
    """The command line or one of its arguments is wrong."""

    exit_code = EXIT_USAGE


class PolicyError(CortexError):
    """The policy file is wrong; the message names file:line:column and the key path."""

    exit_code = EXIT_CONFIG

    def __init__(self, path, line, column, key, message):
        self.path, self.line, self.column, self.key = path, line, column, key
        where = f"{path}:{line}:{column}" if line else str(path)
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


class UnavailableError(CortexError):
    """No set of GPUs satisfies the service right now."""

    exit_code = EXIT_UNAVAILABLE

    def __init__(self, message, decision=None):
        super().__init__(message)
        self.decision = decision


class DriverError(CortexError):
    """The GPU driver could not be asked (library missing, init failed)."""

    exit_code = EXIT_UNAVAILABLE


class TimeoutExpired(CortexError):
    """The driver hung past the discovery timeout, or `wait` reached its deadline."""

    exit_code = EXIT_TIMEOUT


class StateError(CortexError):
    """The state database cannot be used as it is; it is left untouched."""

    exit_code = EXIT_STATE


class UnsafeFileError(CortexError):
    """A file or directory that decides what root does can be changed by someone else."""

    exit_code = EXIT_NOPERM


class NotPermittedError(CortexError):
    """A command needs root (or the owner of the state) and the caller is not."""

    exit_code = EXIT_NOPERM


class OutputError(CortexError):
    """A file cortex-hook must write (env file, drop-in) could not be written."""

    exit_code = EXIT_CANTCREAT
