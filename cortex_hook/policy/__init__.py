"""The admin's policy: where it is and how a command gets it (load.py, with its parsed memo),
the schema (parse.py), and reading YAML with positions (yamlnodes.py)."""
