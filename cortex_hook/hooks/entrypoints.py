"""Entry points of the `cortex_hook` group, read the way importlib.metadata reads them.

Each distribution on sys.path has a `*.dist-info` (or `*.egg-info`) directory whose
`entry_points.txt` lists its entry points. Reading those files directly spares the start path
importing importlib.metadata, which alone costs more than a whole decision.
"""

import os
import sys

GROUP = "cortex_hook"


def distributions(path=None):
    """[(directory, metadata dir name, normalised distribution name)] on PATH (default sys.path);
    a distribution found twice counts once (the first wins), as in importlib.metadata."""
    seen, out = set(), []
    for entry in (sys.path if path is None else path):
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if not name.endswith((".dist-info", ".egg-info")):
                continue
            dist = name.rsplit(".", 1)[0].split("-")[0].lower().replace("-", "_").replace(".", "_")
            if dist not in seen:
                seen.add(dist)
                out.append((entry or ".", name, dist))
    return out


def iter_entry_points(group=GROUP, path=None, dists=None):
    """Yield (name, value, distribution) for every entry point of GROUP in DISTS (default: the
    distributions on PATH, itself by default sys.path)."""
    for directory, name, dist in (distributions(path) if dists is None else dists):
        try:
            with open(os.path.join(directory, name, "entry_points.txt"), encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        yield from ((n, v, dist) for n, v in _parse(text, group))


def metadata_name(dists, wanted):
    """The metadata dir name of distribution WANTED in DISTS (it carries the version), or None."""
    return next((name for _, name, dist in dists if dist == wanted), None)


def load(value):
    """The object an entry point's VALUE (`module:attr.attr`) names, importing its module."""
    module_name, _, attr = value.partition(":")
    module_name = module_name.strip()
    __import__(module_name)
    obj = sys.modules[module_name]
    for part in filter(None, attr.strip().split(".")):
        obj = getattr(obj, part)
    return obj


def _parse(text, group):
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section == group and "=" in line:
            name, value = line.split("=", 1)
            yield name.strip(), value.strip()
