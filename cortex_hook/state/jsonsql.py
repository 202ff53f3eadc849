"""Writing JSON with SQLite's own JSON functions, so the start path never imports json."""


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
