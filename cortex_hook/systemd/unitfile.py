"""Reading unit files as systemd does, and writing values into them so systemd reads them back.

Reading: the unit file is the first one found on the system search path; its drop-ins are every
`NAME.d/*.conf` (for an instance also the template's, and the `service.d/` and dashed-prefix
ones), one per file name (the earlier directory wins), applied in file-name order. That gives the
effective `ExecStart=` list and `Type=`, which `install --mode exec|supervise` wraps.

Writing: a value in an `Exec*=` line goes through word splitting with C-style unescaping inside
double quotes, specifier expansion (`%%`), then `$` expansion (`$$`) -- `exec_word()` undoes all
three (systemd/command.py does them, for `plan`).
"""

import os
import re

from ..errors import UsageError

# systemd 252's system unit search path, highest priority first (systemd.unit(5)).
SEARCH_PATH = (
    "/etc/systemd/system.control", "/run/systemd/system.control", "/run/systemd/transient",
    "/run/systemd/generator.early", "/etc/systemd/system", "/etc/systemd/system.attached",
    "/run/systemd/system", "/run/systemd/system.attached", "/run/systemd/generator",
    "/usr/local/lib/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system",
    "/run/systemd/generator.late",
)
_PLAIN_WORD = re.compile(r"[A-Za-z0-9/_.,:@+=^-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\a": "\\a",
              "\b": "\\b", "\f": "\\f", "\v": "\\v"}


def exec_word(value):
    """VALUE as one word of an Exec*= line, reaching the program byte for byte."""
    if not isinstance(value, str) or "\0" in value:
        raise UsageError(f"cannot put {value!r} into a unit file")
    text = value.replace("$", "$$").replace("%", "%%")
    if text and _PLAIN_WORD.fullmatch(text):  # (prefix characters only matter on the first word,
        return text                            # which is always our absolute program path)
    out = []
    for ch in text:
        if ch in _C_ESCAPES:
            out.append(_C_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def plain_path(path, what):
    """An absolute path safe to write unquoted into a unit file (EnvironmentFile= takes no quotes)."""
    if not os.path.isabs(path) or not re.fullmatch(r"[A-Za-z0-9/_.,:@+-]+", path):
        raise UsageError(f"{what} {path!r}: must be an absolute path of letters, digits and /_.,:@+- "
                         "to be written into a unit file")
    return path


class UnitFile:
    """The keys of one unit file or drop-in: [(section, key, value, line)] in order."""

    def __init__(self, path, entries):
        self.path = path
        self.entries = entries

    @classmethod
    def parse(cls, path, text):
        """Parse TEXT as systemd does: sections, Key=Value, comments, backslash continuations."""
        entries, section = [], None
        lines = text.splitlines()
        i = 0
        while i < len(lines):
            start = i
            line = lines[i].strip()
            i += 1
            if not line or line[0] in "#;":
                continue
            while line.endswith("\\") and i < len(lines):  # continuation: backslash-newline -> space
                nxt = lines[i].strip()
                i += 1
                if nxt[:1] in ("#", ";"):
                    continue  # comment lines inside a continuation are skipped
                line = line[:-1] + " " + nxt
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                continue
            key, sep, value = line.partition("=")
            if not sep:
                continue
            entries.append((section, key.strip(), value.strip(), start + 1))
        return cls(path, entries)

    def values(self, section, key):
        """[(value, line)] of every SECTION KEY= line, in order."""
        return [(v, line) for s, k, v, line in self.entries if s == section and k == key]


class UnitFiles:
    """The unit file and drop-ins systemd would load for UNIT, under ROOT (default /), leaving out
    drop-ins named SKIP_DROPIN (anywhere) and those at SKIP_PATHS (as if they were not there)."""

    def __init__(self, unit, root="/", skip_dropin=None, skip_paths=()):
        self.unit = unit
        self.root = root
        self.main = None
        self.dropins = []
        self._parsed = None
        self._load(skip_dropin, frozenset(skip_paths))

    def _p(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def _load(self, skip_dropin, skip_paths):
        stem, dot, suffix = self.unit.rpartition(".")
        names = [self.unit]
        at = stem.find("@")
        if at >= 0 and not stem.endswith("@"):
            names.append(stem[: at + 1] + "." + suffix)  # the template
        for directory in SEARCH_PATH:
            for name in names:
                path = self._p(os.path.join(directory, name))
                if os.path.isfile(path):
                    self.main = path
                    break
            if self.main:
                break
        dropin_dirs = [f"{suffix}.d"]  # type-wide, e.g. service.d/
        parts = stem.split("-")
        dropin_dirs += ["-".join(parts[:k]) + "-." + suffix + ".d" for k in range(1, len(parts))]
        dropin_dirs += [n + ".d" for n in reversed(names)]  # template first, then the instance
        chosen = {}
        for directory in SEARCH_PATH:
            for d in reversed(dropin_dirs):  # the most specific name wins a tie
                full = self._p(os.path.join(directory, d))
                try:
                    files = os.listdir(full)
                except OSError:
                    continue
                for f in files:
                    if f.endswith(".conf") and f not in chosen and f != skip_dropin \
                            and os.path.join(directory, d, f) not in skip_paths:
                        chosen[f] = os.path.join(full, f)
        self.dropins = [chosen[f] for f in sorted(chosen)]

    def files(self):
        """Every file that applies, in the order systemd applies them."""
        return ([self.main] if self.main else []) + self.dropins

    def parsed(self):
        """Every file that applies, parsed, in the order systemd applies them (read once)."""
        if self._parsed is not None:
            return self._parsed
        out = []
        for path in self.files():
            try:
                with open(path, encoding="utf-8") as f:
                    out.append(UnitFile.parse(path, f.read()))
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"{self.unit}: cannot read {path}: {exc}") from None
        self._parsed = out
        return out

    def service_setting(self, key):
        """The effective value of a single-valued [Service] KEY (the last one wins), or None."""
        value = None
        for uf in self.parsed():
            for v, _ in uf.values("Service", key):
                value = v or None
        return value

    def environment(self, specifiers=None):
        """The unit's own `Environment=` assignments, as systemd applies them: {name: value} (an
        empty assignment resets the list). Each word is unquoted, then SPECIFIERS (a function,
        systemd/command.py) expands its specifiers, or returns None for a word systemd ignores;
        without it they stay as written. `$` is never expanded here (nor by systemd)."""
        env = {}
        for uf in self.parsed():
            for value, _ in uf.values("Service", "Environment"):
                if not value:
                    env = {}
                    continue
                for word in split_words(value):
                    word = specifiers(unquote(word)) if specifiers else unquote(word)
                    name, sep, text = (word or "").partition("=")
                    if sep and _ENV_NAME.fullmatch(name):  # systemd ignores an invalid assignment
                        env[name] = text
        return env

    def command(self):
        """The unit's one effective ExecStart= as (words, wrapped, path, line), or None when there is
        not exactly one: WORDS as systemd splits and unquotes them before expanding specifiers
        (`%` and `$` as written), our own wrapper taken off (WRAPPED: cortex-hook exec/supervise
        runs them); an `@` line's argv[0] dropped."""
        starts = self.exec_start()
        if self.main is None or len(starts) != 1:
            return None
        value, path, line = starts[0]
        prefixes, text = split_prefixes(value)
        words = [unquote(w) for w in split_words(text)]
        if "@" in prefixes and len(words) >= 2:  # the second word is argv[0], not an argument
            words = [words[0]] + words[2:]
        wrapped = any(os.path.basename(w) == "cortex-hook" for w in words[:3]) and "--" in words
        if wrapped:
            words = words[words.index("--") + 1:]
        return words, wrapped, path, line

    def wrapped(self):
        """True when cortex-hook exec/supervise runs the unit's command (it rewrites the argv)."""
        found = self.command()
        return bool(found and found[1])

    def exec_start(self):
        """The effective ExecStart= list: [(value, path, line)]; an empty assignment resets it."""
        out = []
        for uf in self.parsed():
            for v, line in uf.values("Service", "ExecStart"):
                if v == "":
                    out = []
                else:
                    out.append((v, uf.path, line))
        return out


def split_prefixes(value):
    """`-@/usr/bin/x a b` -> ("-@", "/usr/bin/x a b"): systemd's special executable prefixes."""
    i = 0
    while i < len(value) and value[i] in "-@:+!":
        i += 1
    return value[:i], value[i:]


def split_words(text):
    """Word boundaries of an Exec value as systemd splits it, each word kept in its written form."""
    words, i, n = [], 0, len(text)
    while i < n:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            break
        start, quote = i, None
        while i < n:
            c = text[i]
            if quote:
                if c == "\\":
                    i += 2
                    continue
                if c == quote:
                    quote = None
            elif c in "\"'":
                quote = c
            elif c == "\\":
                i += 2
                continue
            elif c in " \t":
                break
            i += 1
        if quote:
            raise UsageError(f"unbalanced quote in {text!r}")
        words.append(text[start:i])
    return words


_UNESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "s": " ",
              "\\": "\\", '"': '"', "'": "'"}


_NUMERIC = {"x": (2, 16), "u": (4, 16), "U": (8, 16)}


def _escape(word, i):
    """(the character the escape at WORD[I:] (after its backslash) stands for, characters used),
    or (None, 0) when systemd cannot decode it."""
    nxt = word[i]
    if nxt in _UNESCAPES:
        return _UNESCAPES[nxt], 1
    if nxt in _NUMERIC:
        width, base = _NUMERIC[nxt]
        digits = word[i + 1:i + 1 + width]
        if len(digits) == width and all(d in "0123456789abcdefABCDEF" for d in digits):
            code = int(digits, base)
            if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF:
                return chr(code), 1 + width
        return None, 0
    digits = word[i:i + 3]
    if len(digits) == 3 and digits[0] in "0123" and all(d in "01234567" for d in digits) and digits != "000":
        return chr(int(digits, 8)), 3
    return None, 0


def unquote(word):
    """One written word of a unit file line with its quotes and C escapes removed, as systemd
    splits it; specifiers (`%`) and variables (`$`) are expanded later (systemd/command.py). An
    escape systemd cannot decode stays as written (its relaxed unescaping, which ExecStart= uses)."""
    out, i, quote = [], 0, None
    while i < len(word):
        c = word[i]
        if c == "\\" and i + 1 < len(word):
            decoded, used = _escape(word, i + 1)
            out.append(decoded if decoded is not None else "\\")
            i += 1 + used
            continue
        if quote and c == quote:
            quote = None
        elif not quote and c in "\"'":
            quote = c
        else:
            out.append(c)
        i += 1
    return "".join(out)
