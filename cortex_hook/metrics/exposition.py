"""The Prometheus text exposition format (version 0.0.4): metric families, written out.

A family is one metric name with its TYPE and HELP and its samples; a histogram's samples are its
`_bucket` (with `le`), `_sum` and `_count` series. Label values are escaped as the format says
(backslash, double quote, newline), so a unit name can never end a label early.
"""

import math

from ..records import Record, new

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Family(Record):
    """One metric: NAME, KIND (gauge, counter or histogram), HELP, and SAMPLES: [(series name,
    {label: value}, number)], the series name being NAME or NAME + a histogram's suffix."""

    name: str
    kind: str
    help: str
    samples: list = new(list)

    def add(self, labels, value, suffix=""):
        """Append one sample of series NAME+SUFFIX."""
        self.samples.append((self.name + suffix, labels, value))
        return self


def _label_value(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 2**53):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render(families):
    """FAMILIES as exposition text (families without samples are left out, as is the custom)."""
    out = []
    for family in families:
        if not family.samples:
            continue
        out.append(f"# HELP {family.name} {family.help.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
        out.append(f"# TYPE {family.name} {family.kind}")
        for series, labels, value in family.samples:
            text = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
            out.append(f"{series}{{{text}}} {_number(value)}" if text else f"{series} {_number(value)}")
    return "\n".join(out) + "\n" if out else ""
