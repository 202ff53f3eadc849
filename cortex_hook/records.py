"""Records: plain classes whose fields are their annotations, and their one serialisation.

Each record declares its fields as annotations, in order, with defaults as class values
(`new(dict)` is a fresh dict per record, like dataclasses' default_factory). They are plain
classes with __slots__ made from those annotations, not dataclasses: creating a dozen dataclasses
costs about 10 ms at import, on the start path of every inference server.

`to_plain()` and `Record.from_plain()` are the one serialisation of every record: plain data
(dicts, lists, str, numbers, bools, None) that marshal and JSON can hold, read back through the
field annotations. The policy cache, the decision record and `leases --json` all use it.
"""

import types


class new:
    """A default built fresh for each record, e.g. `new(dict)`."""

    __slots__ = ("factory",)

    def __init__(self, factory):
        self.factory = factory


class _RecordType(type):
    """Makes `__slots__`, FIELDS, DEFAULTS and TYPES from a record class's annotations."""

    def __new__(mcs, name, bases, namespace):
        annotations = namespace.get("__annotations__")
        if annotations is None and callable(namespace.get("__annotate__")):  # Python 3.14 (PEP 649)
            annotations = namespace["__annotate__"](1)
        types_ = dict(annotations or {})
        namespace["__slots__"] = tuple(types_)
        defaults = {field: namespace.pop(field) for field in types_ if field in namespace}
        cls = super().__new__(mcs, name, bases, namespace)
        cls.FIELDS, cls.DEFAULTS, cls.TYPES = tuple(types_), defaults, types_
        return cls


class Record(metaclass=_RecordType):
    """Positional or keyword construction, repr, field equality and plain-data conversion."""

    def __init__(self, *args, **kwargs):
        names = self.FIELDS
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} positional arguments")
        for name, value in zip(names, args):
            setattr(self, name, value)
        for name in names[len(args):]:
            if name in kwargs:
                value = kwargs.pop(name)
            elif name in self.DEFAULTS:
                value = self.DEFAULTS[name]
                if type(value) is new:
                    value = value.factory()
            else:
                raise TypeError(f"{type(self).__name__} needs {name!r}")
            setattr(self, name, value)
        if kwargs:
            raise TypeError(f"{type(self).__name__} has no field {next(iter(kwargs))!r}")

    def as_dict(self):
        """The fields as a dict (shallow)."""
        return {name: getattr(self, name) for name in self.FIELDS}

    def to_plain(self):
        """The record as plain data (nested records, sets and tuples converted too)."""
        return to_plain(self)

    @classmethod
    def from_plain(cls, data):
        """The record `to_plain()` gave DATA for; a missing field takes its default."""
        return from_plain(cls, data)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.as_dict().items())})"

    def __eq__(self, other):
        return type(other) is type(self) and all(getattr(self, n) == getattr(other, n) for n in self.FIELDS)

    __hash__ = None


class FrozenRecord(Record):
    """A Record used as a value (hashable by its fields)."""

    def __hash__(self):
        return hash(tuple(getattr(self, n) for n in self.FIELDS))


def to_plain(value):
    """VALUE as plain data: records become dicts, sets sorted lists, tuples lists."""
    if isinstance(value, Record):
        return {name: to_plain(getattr(value, name)) for name in value.FIELDS}
    if isinstance(value, dict):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted(to_plain(item) for item in value)
    return value


def from_plain(kind, data):
    """Read plain DATA back as KIND: a record class, or an annotation such as `list[Gpu]`,
    `tuple[Process, ...] | None` or `frozenset[str]`."""
    if data is None:
        return None
    if isinstance(kind, type) and issubclass(kind, Record):
        return kind(**{name: from_plain(kind.TYPES[name], value) for name, value in data.items()
                       if name in kind.TYPES})
    if isinstance(kind, types.UnionType):
        options = [k for k in kind.__args__ if k is not type(None)]
        return from_plain(options[0], data) if len(options) == 1 else data
    origin, args = getattr(kind, "__origin__", kind), getattr(kind, "__args__", ())
    if origin is dict:
        return {key: from_plain(args[1], item) for key, item in data.items()} if args else dict(data)
    if origin in (list, tuple, frozenset):
        if len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis):
            items = [from_plain(args[0], item) for item in data]
        elif args:
            items = [from_plain(k, item) for k, item in zip(args, data)]
        else:
            items = data
        return origin(items)
    return data
