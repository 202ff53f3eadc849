"""A reference parser of systemd 252's EnvironmentFile= rules, written from those rules (not from
cortex-hook's renderer), so a round trip through it checks that every value reaches the service."""

_NL = "\n\r"
_BLANK = " \t\n\r"
_DQ_ESCAPABLE = '"\\`$'


class EnvParseError(Exception):
    pass


def _valid_env_name(name):
    return bool(name) and (name[0].isalpha() or name[0] == "_") and name.isascii() and \
        all(c.isalnum() or c == "_" for c in name)


def parse_env_252(text):
    """Parse TEXT as systemd 252 reads an EnvironmentFile=.

    Returns (assignments, complete): assignments is [(name, value)] in file order (a later
    assignment of a name replaces an earlier one when systemd builds the environment);
    complete is False when the text ends inside an assignment (no final newline, open quote),
    or contains a line systemd drops (no `=`, or an invalid name).
    """
    out = []
    complete = True
    state = "pre_key"
    key, value = [], []
    for c in text:
        if c == "\0":
            complete = False
            break
        if state == "pre_key":
            if c in "#;":
                state = "comment"
            elif c not in _BLANK:
                state, key, value = "key", [c], []
        elif state == "key":
            if c in _NL:
                complete = False  # a line without '=': systemd drops it
                state = "pre_key"
            elif c == "=":
                state = "pre_value"
            else:
                key.append(c)
        elif state in ("pre_value", "value"):
            if c in _NL:
                v = "".join(value)
                if state == "value":
                    v = v.rstrip(" \t")
                complete &= _push(out, key, v)
                state = "pre_key"
            elif c == "'" and state == "pre_value":
                state = "single"
            elif c == '"' and state == "pre_value":
                state = "double"
            elif c == "\\":
                state = "value_escape"
            elif state == "value" or c not in " \t":
                value.append(c)
                state = "value"
        elif state == "value_escape":
            if c not in _NL:
                value.append(c)
            state = "value"
        elif state == "single":
            if c == "'":
                state = "pre_value"
            else:
                value.append(c)
        elif state == "double":
            if c == '"':
                state = "pre_value"
            elif c == "\\":
                state = "double_escape"
            else:
                value.append(c)
        elif state == "double_escape":
            if c in _DQ_ESCAPABLE:
                value.append(c)
            elif c != "\n":
                value += ["\\", c]
            state = "double"
        elif state == "comment":
            if c == "\\":
                state = "comment_escape"
            elif c in _NL:
                state = "pre_key"
        elif state == "comment_escape":  # systemd <= 253: the escaped character stays in the comment
            state = "comment"
    if state in ("pre_value", "value", "value_escape", "single", "double", "double_escape"):
        complete = False  # the last assignment has no newline (systemd would still take it)
        _push(out, key, "".join(value))
    elif state == "key":
        complete = False
    return out, complete


def _push(out, key, value):
    name = "".join(key).rstrip(" \t")
    if not _valid_env_name(name):
        return False
    out.append((name, value))
    return True


def env_as_systemd_reads(text):
    """{name: value} as the service sees it, or EnvParseError unless the file is complete."""
    pairs, complete = parse_env_252(text)
    if not complete or not text.endswith("\n"):
        raise EnvParseError(f"incomplete env file: {text[-60:]!r}")
    return dict(pairs)
