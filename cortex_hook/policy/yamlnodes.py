"""Reading YAML with positions: every value is checked where it stands, and a mistake names
file:line:column and the key path.

The YAML is composed into nodes (which carry their position), not loaded, so that each value can
be checked against what the schema expects. Anchors, aliases and `<<` merge keys work as in any
YAML file, with limits that stop alias bombs and recursive documents.
"""

import yaml

from ..errors import PolicyError, did_you_mean
from ..quantities import format_duration, parse_duration

MAX_NODES = 100_000
MAX_DEPTH = 64
MAX_NUMBER = 1e9       # weights, limits: far beyond anything sensible, far below overflow
MAX_SECONDS = 30 * 86400  # timeouts and waits something can actually wait for


def compose(text, path):
    """The root node of YAML TEXT (None for an empty document), or PolicyError naming PATH."""
    # The pure-Python loader, not CSafeLoader: the C one recurses on the C stack and a file of
    # ~25,000 nested brackets kills the process (SIGSEGV); Python's recursion limit turns the same
    # file into a clean error. Parsing is rare: the start path reads the parsed policy's memo.
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise PolicyError(path, mark.line + 1 if mark else 0, mark.column + 1 if mark else 0,
                          None, f"invalid YAML: {problem}") from None
    except yaml.reader.ReaderError as exc:  # e.g. a control character: locate it by position
        line = text[: exc.position].count("\n") + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise PolicyError(path, line, column, None, f"invalid YAML: {exc.reason} "
                                                    f"(character {exc.character!r})") from None
    except yaml.YAMLError as exc:
        raise PolicyError(path, 0, 0, None, f"invalid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise PolicyError(path, 0, 0, None, f"nested deeper than this loader allows (over {MAX_DEPTH} levels)") \
            from None
    except ValueError as exc:
        raise PolicyError(path, 0, 0, None, f"invalid YAML: {exc}") from None
    return root


class NodeReader:
    """Reads composed YAML nodes into Python values, checking each against what the schema
    expects and failing with the node's position and key path (PolicyError)."""

    def __init__(self, path):
        self.path = path
        self.nodes_seen = 0

    def fail(self, node, key, message):
        """Raise PolicyError at NODE's position (or the file's, for None) for KEY."""
        mark = node.start_mark if node is not None else None
        raise PolicyError(self.path, mark.line + 1 if mark else 0, mark.column + 1 if mark else 0,
                          key, message)

    def _count(self, node, depth):
        self.nodes_seen += 1
        if self.nodes_seen > MAX_NODES:
            self.fail(node, None, f"more than {MAX_NODES} YAML nodes (alias bomb?)")
        if depth > MAX_DEPTH:
            self.fail(node, None, f"nested deeper than {MAX_DEPTH} levels (recursive alias?)")

    def mapping(self, node, key, allowed, depth):
        """Return [(name, key_node, value_node)] for a mapping node, checking every key."""
        self._count(node, depth)
        if not isinstance(node, yaml.MappingNode):
            what = f"a mapping with keys {keys_list(allowed)}" if allowed else "a mapping"
            self.fail(node, key, f"expected {what}, got {_kind(node)}")
        out, seen = [], {}
        for name, knode, vnode in self._pairs(node, key, depth):
            path = f"{key}.{name}" if key else name
            if allowed is not None and name not in allowed:
                hint = did_you_mean(name, allowed) or f" (expected one of {keys_list(allowed)})"
                self.fail(knode, path, f"unknown key{hint}")
            if name in seen:
                self.fail(knode, path, f"duplicate key (first given on line {seen[name]})")
            seen[name] = knode.start_mark.line + 1
            out.append((name, knode, vnode))
        return out

    def _pairs(self, node, key, depth):
        """Key/value pairs with `<<` merge keys flattened (explicit keys win)."""
        explicit, merged = [], []
        for knode, vnode in node.value:
            if knode.tag == "tag:yaml.org,2002:merge":
                sources = vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]
                for src in sources:
                    if not isinstance(src, yaml.MappingNode):
                        self.fail(src, key, "a << merge key needs a mapping (or a list of mappings)")
                    self._count(src, depth + 1)
                    merged.extend(self._pairs(src, key, depth + 1))
                continue
            if not isinstance(knode, yaml.ScalarNode) or not isinstance(knode.value, str) \
                    or knode.tag != "tag:yaml.org,2002:str":
                self.fail(knode, key, "keys must be plain names")
            explicit.append((knode.value, knode, vnode))
        names = {n for n, _, _ in explicit}
        result, taken = list(explicit), set(names)
        for name, knode, vnode in merged:
            if name not in taken:
                result.append((name, knode, vnode))
                taken.add(name)
        return result

    def sequence(self, node, key, depth):
        """The items of a list node."""
        self._count(node, depth)
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, key, f"expected a list, got {_kind(node)}")
        return node.value

    def scalar(self, node, key, depth):
        """The Python value of a scalar node (str, int, float, bool or None)."""
        self._count(node, depth)
        if not isinstance(node, yaml.ScalarNode):
            self.fail(node, key, f"expected a single value, got {_kind(node)}")
        try:
            return yaml.constructor.SafeConstructor().construct_object(node)
        except Exception as exc:  # explicit tags with bad content (`!!bool maybe`, `!!int ''`) raise anything
            self.fail(node, key, f"cannot read this value as {node.tag.rsplit(':', 1)[-1]}: "
                                 f"{getattr(exc, 'problem', None) or type(exc).__name__}")

    def plain(self, node, key, depth):
        """A scalar, or a mapping of scalars (for plugin options)."""
        if isinstance(node, yaml.MappingNode):
            return {k: self.scalar(v, f"{key}.{k}", depth + 1) for k, _, v in self.mapping(node, key, None, depth)}
        return self.scalar(node, key, depth)

    def string(self, node, key, depth, what="a string"):
        """A string (a quoted or plain YAML string, not a number or bool that looks like one)."""
        value = self.scalar(node, key, depth)
        if not isinstance(value, str) or node.tag != "tag:yaml.org,2002:str":
            self.fail(node, key, f"expected {what}, got {show(value)}")
        return value

    def boolean(self, node, key, depth):
        """true or false."""
        value = self.scalar(node, key, depth)
        if not isinstance(value, bool):
            self.fail(node, key, f"expected true or false, got {show(value)}")
        return value

    def number(self, node, key, depth, minimum=None, integer=False, maximum=MAX_NUMBER):
        """A number (INTEGER: an int) between MINIMUM and MAXIMUM."""
        value = self.scalar(node, key, depth)
        ok_types = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_types) or value != value:
            self.fail(node, key, f"expected {'an integer' if integer else 'a number'}, got {show(value)}")
        if minimum is not None and value < minimum:
            self.fail(node, key, f"must be at least {minimum}, got {show(value)}")
        if value > maximum:
            self.fail(node, key, f"must be at most {maximum:g}, got {show(value)}")
        return value

    def choice(self, node, key, depth, choices):
        """One of CHOICES (a did-you-mean otherwise)."""
        value = self.scalar(node, key, depth)
        if not isinstance(value, str) or value not in choices:
            self.fail(node, key, f"expected one of {keys_list(choices)}, got {show(value)}"
                      + (did_you_mean(value, choices) if isinstance(value, str) else ""))
        return value

    def duration(self, node, key, depth, maximum=MAX_SECONDS):
        """Seconds from a duration such as `30s`, `5m` or `1h 30m`, shorter than MAXIMUM."""
        value = self.scalar(node, key, depth)
        try:
            seconds = parse_duration(value)
        except (ValueError, OverflowError) as exc:
            self.fail(node, key, str(exc))
        if not seconds < maximum:  # also catches inf
            self.fail(node, key, f"must be shorter than {format_duration(maximum)}, got {show(value)}")
        return seconds


def _kind(node):
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return show(node.value) if node is not None else "nothing"


def show(value):
    """VALUE as an error message quotes it (long strings cut)."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:40] + "…")
    return repr(value)


def keys_list(keys):
    """`a, b, c`."""
    return ", ".join(keys)
