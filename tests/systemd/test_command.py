"""`plan UNIT` shows the command as systemd runs it: specifiers from the unit's name (with
systemd's unescaping), variables from its Environment=, and what only the start knows, named.
Checked against the real systemd 252 (sd-sandbox) with hostile instance names."""

import json

import pytest

from cortex_hook.systemd.command import expand_specifiers, expand_variables, read_command, unit_specifiers

TEMPLATE = r"my-big\x2dllm@.service"
# every specifier plan expands, C escapes before specifiers, each form of variable, quoting
ENVIRONMENT = r'''Environment="SP=a b" X=%I "Q=q\x20r" DD=$$z PP=100%% Y=%j "QUOTED=\"c d\" e"'''
WORDS = (r'''n=%n N=%N p=%p P=%P i=%i I=%I j=%j J=%J f=%f t=%t u=%u h=%h pct=%% \x25n "${X}" $SP ${SP} '''
         r'''pre$SP "$$SP" ${X:-def} ${Q} ${DD} ${PP} $ ${A-B} "q ${Y}" 'single %I' $QUOTED '''
         r'''--port ${PORT} ${UNSET}x $UNSET''')
INSTANCES = ["plain", r"a-b\x2dc", r"x\x20y", r"caf\xc3\xa9", "-", r"dash\x2d-slash", r"q\x22uote"]


def recorder(h):
    """A program that appends its arguments (after the output file) as one JSON line."""
    path = h.out.parent / "record_argv.py"
    path.write_text("import json, sys\nwith open(sys.argv[1], 'a') as f:\n"
                    "    f.write(json.dumps(sys.argv[2:]) + '\\n')\n")
    return path


def started_argv(h, unit, out):
    """Start UNIT (Type=oneshot) and return the argv its program got."""
    before = out.read_text().splitlines() if out.exists() else []
    r = h.sb.systemctl("start", unit)
    assert r.returncode == 0, (unit, r.stderr, h.sb.journal(unit)[-2000:])
    return json.loads(out.read_text().splitlines()[len(before)])


def plan(h, unit):
    r = h.cortex("plan", unit, "--json", check=False)
    assert r.returncode == 0, (r.stdout, r.stderr)
    return json.loads(r.stdout)


@pytest.mark.systemd
def test_plan_command_is_what_systemd_runs_for_hostile_instances(host):
    h = host.setup("services:\n  - match: 'my-big\\x2dllm@*.service'\n    gpus: 1\n")
    out = h.out / "argv.jsonl"
    env_file = h.out / "vars.env"
    env_file.write_text("PORT=8001\n")
    h.sb.write_unit(TEMPLATE, f"[Service]\nType=oneshot\n{ENVIRONMENT}\nEnvironmentFile=-{env_file}\n"
                              f"ExecStart=/usr/bin/python3 {recorder(h)} {out} {WORDS}\n")
    h.sb.daemon_reload()
    for instance in INSTANCES:
        unit = TEMPLATE.replace("@", "@" + instance)
        real = started_argv(h, unit, out)
        shown = plan(h, unit)
        argv = shown["argv"][3:]  # after python3, the recorder and its output file
        # what plan leaves as written is exactly what only the start fills in
        at_start = [w.replace("${PORT}", "8001").replace("${UNSET}", "") for w in argv if w != "$UNSET"]
        assert at_start == real, (instance, argv, real)
        notes = "\n".join(shown["notes"])
        assert f"${{PORT}} is only known at start: the unit's Environment= does not set PORT; " \
               f"EnvironmentFile={env_file} or the service manager may, else it is empty" in notes
        assert "$UNSET is only known at start" in notes and "else it is left out" in notes
        assert "${UNSET} is only known at start" in notes
        assert "${X:-def}" not in notes and "pre$SP" not in notes  # never expanded: no note
        assert f"$SP is shown as Environment= gives it ('a b'); EnvironmentFile={env_file}, read at start, " \
               "may change it" in notes


@pytest.mark.systemd
def test_a_specifier_systemd_cannot_resolve_is_said_not_guessed(host):
    """`%f` of an instance that is no path (`a--b` is `a//b`): systemd refuses the unit, and plan
    says why instead of showing a command."""
    h = host.setup("services:\n  - match: 'pathy@*.service'\n")
    h.sb.write_unit("pathy@.service", "[Service]\nType=oneshot\nExecStart=/bin/echo %f\n")
    h.sb.daemon_reload()
    r = h.sb.systemctl("start", "pathy@a--b.service")
    assert r.returncode != 0 and "bad unit file setting" in r.stderr
    shown = plan(h, "pathy@a--b.service")
    assert shown["argv"] is None
    assert any(n.startswith("command: unknown (ExecStart= in /etc/systemd/system/pathy@.service:3: %f: ")
               and n.endswith("systemd refuses to start the unit)") for n in shown["notes"]), shown["notes"]
    assert plan(h, "pathy@a-b.service")["argv"] == ["/bin/echo", "/a/b"]


# -- the rules, without systemd (each seen with systemd 252 above) --------------------------------
@pytest.mark.parametrize("unit, expected", [
    (r"my-big\x2dllm@a-b\x2dc.service", {"n": r"my-big\x2dllm@a-b\x2dc.service", "N": r"my-big\x2dllm@a-b\x2dc",
                                          "p": r"my-big\x2dllm", "P": "my/big-llm", "i": r"a-b\x2dc",
                                          "I": "a/b-c", "j": r"big\x2dllm", "J": "big-llm", "f": "/a/b-c"}),
    ("vllm.service", {"n": "vllm.service", "N": "vllm", "p": "vllm", "i": "", "I": "", "j": "vllm",
                      "f": "/vllm"}),
    ("t@-.service", {"I": "/", "f": "/"}),
    (r"t@caf\xc3\xa9.service", {"I": "café", "f": "/café"}),
])
def test_specifiers_of_a_unit_name(unit, expected):
    table = unit_specifiers(unit)
    assert {k: table[k] for k in expected} == expected


@pytest.mark.parametrize("instance", ["-lead", "trail-", "a--b", "..", r"a-..-b", r"\x2e\x2e"])
def test_f_of_an_instance_that_is_no_path_is_refused(instance):
    table = unit_specifiers(f"t@{instance}.service")
    with pytest.raises(ValueError, match="not an escaped path"):
        expand_specifiers("%f", table, set())
    assert expand_specifiers("%i", table, set()) == instance


def test_unknown_and_host_specifiers():
    table, left = unit_specifiers("t@x.service"), set()
    assert expand_specifiers("%H:%i:%%:100%", table, left) == "%H:x:%:100%"
    assert left == {"%H"}
    with pytest.raises(ValueError, match="%z is not a specifier"):
        expand_specifiers("%z", table, left)


def test_variables_as_systemd_252_expands_them():
    words = ["$SP", "${SP}", "pre$SP", "${X:-d}", "x${A:B}$$y", "$", "$A-B", "${A-B}", "${}", "$$SP", "$UNSET",
             "${UNSET}x", "$Q"]
    argv, unset, used = expand_variables(words, {"SP": "a b", "Q": "\"c d\" e\\f"})
    assert argv == ["a", "b", "a b", "pre$SP", "${X:-d}", "x${A:B}$y", "", "", "$SP", "$UNSET", "${UNSET}x",
                    "c d", "ef"]
    assert unset == [("$UNSET", "UNSET"), ("${UNSET}", "UNSET")]
    assert used == ["SP", "SP", "Q"]


def test_plan_reads_the_template_and_expands_for_the_instance(tmp_path):
    """Environment= words are split, then unquoted, then their specifiers expanded: %I with a space
    stays one value."""
    path = tmp_path / "etc/systemd/system/vllm@.service"
    path.parent.mkdir(parents=True)
    path.write_text("[Service]\nEnvironment=PORT=80%i MODEL=/m/%I\n"
                    "ExecStart=/usr/bin/vllm serve ${MODEL} --port ${PORT} --served-model-name %j\n")
    command = read_command(r"vllm@01\x20x.service", str(tmp_path))
    assert command.argv == ["/usr/bin/vllm", "serve", "/m/01 x", "--port", r"8001\x20x", "--served-model-name",
                            "vllm"]
    assert not command.wrapped and command.notes({}) == []
