"""The command a unit runs, as systemd 252 hands it to the program: what `plan UNIT` shows.

Each word of `ExecStart=` is split and unquoted (systemd/unitfile.py). When systemd loads the
unit, its specifiers are expanded: `%n %N %p %P %i %I %j %J %f`, the system manager's fixed
directories and user, `%%`. When the unit starts, its variables: `${NAME}` anywhere in a word is
the value as it is, `$NAME` as a whole word is the value split at whitespace, `$$` is `$`, and a
name nothing sets is empty (a `$NAME` word is left out). `${NAME:-x}` and `$NAME` inside a word
stay as written. The values come from the unit's `Environment=` (unquoted, then its specifiers
expanded), the service manager's environment and the `EnvironmentFile=`s, which are read at
start and override `Environment=`. So `plan` expands what the unit files say and names what only
the start knows. tests/systemd/test_command.py holds these rules against the real systemd.
"""

import re

from ..errors import CortexError
from .dropin import DROPIN_NAME
from .unitfile import UnitFiles

# the system manager's own values (systemd.unit(5), "Specifiers"): %u %U %g %G %h are the
# manager's user, root, whatever User= says
FIXED = {"%": "%", "t": "/run", "S": "/var/lib", "C": "/var/cache", "L": "/var/log", "E": "/etc",
         "T": "/tmp", "V": "/var/tmp", "u": "root", "U": "0", "g": "root", "G": "0", "h": "/root"}
# systemd 252's other specifiers: the host's or the unit file's, left as written by `plan`
LEFT_AS_WRITTEN = frozenset("aAbBcdHlmMoqrRsvwWyY")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEX = re.compile(r"[0-9a-fA-F]{2}")
_WHITESPACE = " \t\n\r"


# -- specifiers ---------------------------------------------------------------------------------
def unescape(text):
    """systemd's unit_name_unescape(): `-` is `/`, `\\xNN` the byte NN (text up to a NUL byte)."""
    out, i = bytearray(), 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if text[i + 1:i + 2] != "x" or not _HEX.fullmatch(text[i + 2:i + 4]):
                raise ValueError(f"{text!r} has a `\\` that is not `\\xNN`")
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
            continue
        out += b"/" if c == "-" else c.encode()
        i += 1
    return bytes(out).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def path_unescape(text):
    """systemd's unit_name_path_unescape(): `-` is `/`; else the unescaped TEXT after a `/`, which
    must be a normalized relative path (no leading or trailing `/`, no `//`, `.` or `..`)."""
    if text == "-":
        return "/"
    path = unescape(text)
    if not text or any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"{text!r} is not an escaped path (systemd: Invalid argument)")
    return "/" + path


def unit_specifiers(unit):
    """{letter: value} of UNIT's specifiers that `plan` expands: from its name, and the fixed
    ones. A value systemd cannot resolve (%f of a name that is no path) is the ValueError it
    raises instead."""
    stem = unit.rpartition(".")[0]
    prefix, at, instance = stem.partition("@")
    last = prefix.rpartition("-")[2]
    table = dict(FIXED, n=unit, N=stem, p=prefix, i=instance, j=last)
    for letter, function, text in (("P", unescape, prefix), ("I", unescape, instance),
                                   ("J", unescape, last), ("f", path_unescape, instance if at else prefix)):
        try:
            table[letter] = function(text)
        except ValueError as exc:
            table[letter] = exc
    return table


def expand_specifiers(text, table, left):
    """TEXT with its specifiers replaced from TABLE (unit_specifiers). One of LEFT_AS_WRITTEN
    stays, and joins the set LEFT; an unknown one, or one systemd cannot resolve, raises
    ValueError (systemd refuses the line). A `%` at the very end stays, as in systemd."""
    out, i = [], 0
    while i < len(text):
        if text[i] != "%":
            out.append(text[i])
            i += 1
            continue
        letter = text[i + 1:i + 2]
        value = table.get(letter) if letter else "%"
        if isinstance(value, ValueError):
            raise ValueError(f"%{letter}: {value}")
        if value is None:
            if letter not in LEFT_AS_WRITTEN:
                raise ValueError(f"%{letter} is not a specifier systemd knows")
            value = "%" + letter
            left.add(value)
        out.append(value)
        i += 2
    return "".join(out)


# -- variables ----------------------------------------------------------------------------------
def split_value(value):
    """The words a `$NAME` word becomes: VALUE split at whitespace, quotes removed, a backslash
    taking the next character as it is (systemd: EXTRACT_RELAX|EXTRACT_UNQUOTE)."""
    words, word, quote, started, i = [], [], None, False, 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            word.append(value[i + 1])
            started, i = True, i + 2
            continue
        if quote:
            if c == quote:
                quote = None
            else:
                word.append(c)
        elif c in "'\"":
            quote, started = c, True
        elif c in _WHITESPACE:
            if started:
                words.append("".join(word))
            word, started = [], False
        else:
            word.append(c)
            started = True
        i += 1
    if started:
        words.append("".join(word))
    return words


def _replace(word, env, unset, used):
    """WORD with its `${NAME}` and `$$` replaced (systemd 252's replace_env() without flags)."""
    out, i = [], 0
    while i < len(word):
        c = word[i]
        nxt = word[i + 1:i + 2]
        if c != "$" or nxt not in ("$", "{"):
            out.append(c)
            i += 1
        elif nxt == "$":
            out.append("$")
            i += 2
        else:
            stops = [k for k in (word.find("}", i + 2), word.find(":", i + 2)) if k >= 0]
            end = min(stops) if stops else len(word)
            if end == len(word) or word[end] == ":":  # unterminated, or `${NAME:…}`: kept as written
                out.append(word[i:end + 1])
                i = end + 1
                continue
            name = word[i + 2:end]
            if name in env:
                out.append(env[name])
                used.append(name)
            elif _NAME.fullmatch(name):  # something may set it at start: kept as written
                out.append(word[i:end + 1])
                unset.append((word[i:end + 1], name))
            i = end + 1  # (a name no environment can hold is always empty)
    return "".join(out)


def expand_variables(words, env):
    """(argv, unset, used): WORDS as the program gets them when ENV ({name: value}) is the
    environment. A reference to a name ENV lacks stays as written and is listed in UNSET as
    (text, name); one to a name no environment can hold is empty, as at start. USED: the names
    of ENV that were used."""
    argv, unset, used = [], [], []
    for word in words:
        if word.startswith("$") and word[1:2] not in ("{", "$"):
            name = word[1:]
            if name in env:
                argv.extend(split_value(env[name]))
                used.append(name)
            elif _NAME.fullmatch(name):
                argv.append(word)
                unset.append((word, name))
            continue
        argv.append(_replace(word, env, unset, used))
    return argv, unset, used


# -- the unit's command -------------------------------------------------------------------------
class UnitCommand:
    """What `plan UNIT` knows of the command UNIT runs.

    ARGV: as the program gets it, our own wrapper taken off (None when unknown: WHY says why);
    WRAPPED: cortex-hook exec/supervise runs it (and rewrites it); UNSET: [(text, name)] left as
    written, only the start knows them; USED: {name: value} the unit's Environment= gave;
    ENV_FILES: the admin's EnvironmentFile=s; OWN_ENV_FILE: cortex-hook's env file is loaded;
    LEFT: host or file specifiers left as written.
    """

    def __init__(self, argv=None, wrapped=False, why=None, unset=(), used=None, env_files=(),
                 own_env_file=False, left=()):
        self.argv, self.wrapped, self.why = argv, wrapped, why
        self.unset, self.used, self.env_files = list(unset), dict(used or {}), list(env_files)
        self.own_env_file, self.left = own_env_file, sorted(left)

    def notes(self, planned):
        """What `plan` says about the command: why it is unknown, and each value only the start
        knows. PLANNED is the environment of this plan, which cortex-hook's env file carries."""
        if self.argv is None:
            return [f"command: unknown ({self.why})"] if self.why else []
        out = [f"command: {spec} is left as written (systemd fills it in from the host or the unit "
               "file when it loads the unit)" for spec in self.left]
        files = ", ".join(self.env_files)
        for text, name in dict.fromkeys(self.unset):
            if name in planned and self.own_env_file:
                out.append(f"command: {text} is only known at start: cortex-hook's env file sets it "
                           f"({name}={planned[name]} in this plan)")
                continue
            where = f"EnvironmentFile={files} or the service manager" if files else "the service manager"
            gone = "empty" if text.startswith("${") else "left out"
            why = ("cortex-hook's env file would set it, but the unit does not load that file "
                   "(cortex-hook install UNIT)") if name in planned else \
                f"the unit's Environment= does not set {name}; {where} may, else it is {gone}"
            out.append(f"command: {text} is only known at start: {why}")
        for name, value in self.used.items():
            if name in planned and self.own_env_file:
                out.append(f"command: ${name} is shown as Environment= gives it ({value!r}), but "
                           f"cortex-hook's env file sets it at start ({name}={planned[name]} in this plan)")
            elif files:
                out.append(f"command: ${name} is shown as Environment= gives it ({value!r}); "
                           f"EnvironmentFile={files}, read at start, may change it")
        return out


def read_command(unit, root="/"):
    """UNIT's command as systemd would run it now: a UnitCommand (never raises for a unit it
    cannot read: WHY says so)."""
    try:
        files = UnitFiles(unit, root)
        found = files.command()
        if found is None:  # (no unit file: a unit planned before it is written, nothing to say)
            return UnitCommand(why=None if files.main is None else f"{unit}: not exactly one ExecStart=")
        words, wrapped, path, line = found
        table, left = unit_specifiers(unit), set()
        env = files.environment(lambda word: _or_none(expand_specifiers, word, table, left))
        try:
            words = [expand_specifiers(w, table, left) for w in words]
        except ValueError as exc:
            return UnitCommand(wrapped=wrapped, why=f"ExecStart= in {path}:{line}: {exc}; systemd "
                                                    "refuses to start the unit")
        env_files, own = _env_files(files, table, set())
    except CortexError as exc:
        return UnitCommand(why=str(exc))
    argv, unset, used = expand_variables(words, env)
    used = {name: env[name] for name in dict.fromkeys(used)}
    return UnitCommand(argv or None, wrapped, None if argv else "ExecStart= has no words", unset, used,
                       env_files, own, left)


def _env_files(files, table, left):
    """(the admin's EnvironmentFile= paths, whether cortex-hook's own is among them)."""
    found = []
    for uf in files.parsed():
        for value, _ in uf.values("Service", "EnvironmentFile"):
            if not value:
                found = []
                continue
            path = _or_none(expand_specifiers, value.lstrip("-"), table, left)
            if path is not None:  # (systemd ignores one it cannot resolve)
                found.append((path, uf.path.rsplit("/", 1)[-1] == DROPIN_NAME))
    return [p for p, ours in found if not ours], any(ours for _, ours in found)


def _or_none(function, *args):
    try:
        return function(*args)
    except ValueError:
        return None
