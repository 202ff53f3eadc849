"""The history's JSON detail: written with SQLite's own JSON functions, so the start path never
imports json, and read back (by commands that show it) with json."""


def json_sql(value, params):
    """An SQL expression with which SQLite writes VALUE (dicts, lists, str, numbers, bools, None)
    as JSON text, appending the scalars it binds to PARAMS. SQLite's JSON functions escape as
    json.dumps does, and the start path does not import json to write a history row."""
    if isinstance(value, dict):
        items = []
        for key in sorted(value):
            params.append(str(key))
            items.append("?, " + json_sql(value[key], params))
        return f"json_object({', '.join(items)})"
    if isinstance(value, (list, tuple)):
        return f"json_array({', '.join([json_sql(v, params) for v in value])})"
    if isinstance(value, bool):
        return "json('true')" if value else "json('false')"
    if value is None:
        return "NULL"
    params.append(value)
    return "?"


def history_dicts(rows):
    """History ROWS (id, at, unit, action, gpus, detail JSON), newest first, as dicts oldest first."""
    import json  # reading the history is never on the start path
    return [{"id": i, "at": at, "unit": u, "action": a, "gpus": [g for g in gpus.split(",") if g],
             "detail": json.loads(d)} for i, at, u, a, gpus, d in reversed(rows)]
