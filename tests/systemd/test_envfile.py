"""Env files in systemd's EnvironmentFile= syntax (systemd/envfile.py), read back by an independent
reference parser (tests/helpers/envrules.py)."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cortex_hook.errors import UsageError
from cortex_hook.files.atomic import write_atomic
from cortex_hook.systemd.envfile import render_env

from ..helpers.envrules import EnvParseError, env_as_systemd_reads


def test_reference_parser_follows_the_rules():
    """The parser itself, on hand-written systemd syntax (so it is not just our renderer's mirror)."""
    text = (b'# comment "with quotes\n; another\n\n'
            b'A="x\\"y\\\\z\\`w\\$v"\n'
            b'B="keep \\n and \\q"\n'
            b'C="one\\\ntwo"\n'
            b'D="real\nnewline"\n'
            b"E='single $x \\ \"'\n"
            b'F=  plain value   \n'
            b'G=cont\\\ninued\n'
            b'H=\n')
    assert env_as_systemd_reads(text.decode("utf-8")) == {
        "A": 'x"y\\z`w$v', "B": "keep \\n and \\q", "C": "onetwo", "D": "real\nnewline",
        "E": 'single $x \\ "', "F": "plain value", "G": "continued", "H": ""}
    with pytest.raises(EnvParseError):
        env_as_systemd_reads('A="open\n')


# -- render_env ---------------------------------------------------------------------------------
TRICKY = {
    "SPACES": "two words  and   more ",
    "LEADING": "   padded",
    "DQUOTE": 'say "hi" and ""',
    "SQUOTE": "it's 'quoted'",
    "DOLLAR": "$HOME ${PATH} $(id) $$ $",
    "BACKTICK": "`id` and ``",
    "BACKSLASH": "C:\\path\\to\\n and \\t and \\\\ two",
    "TRAIL_BACKSLASH": "ends with \\",
    "BACKSLASH_NEWLINE": "a\\\nb",
    "BACKSLASH_QUOTE": '\\"',
    "NEWLINE": "line1\nline2\n",
    "ONLY_NEWLINE": "\n",
    "CR": "carriage\rreturn",
    "TAB": "a\tb",
    "PERCENT": "100% %n %% %h",
    "HASH": "# not a comment",
    "SEMICOLON": "; not a comment",
    "EQUALS": "a=b=c",
    "UNICODE": "naïve café – 日本語 🚀",
    "EMPTY": "",
    "MIXED": '\\$`"\n\\\\ $"`\\',
}


def test_render_env_round_trips_through_systemd_rules():
    text = render_env(TRICKY, "written by a test\nsecond header line with \"quotes\" and X=1")
    data = text.encode("utf-8")
    parsed = env_as_systemd_reads(data.decode("utf-8"))
    assert list(parsed) == list(TRICKY)  # order kept, no header line parsed as a variable
    for name, value in TRICKY.items():
        assert parsed[name].encode("utf-8") == value.encode("utf-8"), name


def test_render_env_writes_one_double_quoted_assignment_per_variable():
    text = render_env({"A": "plain", "B": 'q"'}, "hdr")
    assert text == '# hdr\nA="plain"\nB="q\\""\n'


def test_written_file_round_trips_byte_for_byte(tmp_path):
    path = str(tmp_path / "x.env")
    write_atomic(path, render_env(TRICKY, "hdr"))
    with open(path, "rb") as f:  # binary: no newline translation of the \r
        parsed = env_as_systemd_reads(f.read().decode("utf-8"))
    assert {k: v.encode() for k, v in parsed.items()} == {k: v.encode() for k, v in TRICKY.items()}


_VALUE_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True),
                       st.text(_VALUE_CHARS, max_size=40), max_size=6))
def test_property_any_text_without_nul_round_trips(env):
    assert env_as_systemd_reads(render_env(env, "h")) == env


@pytest.mark.parametrize("env, needle", [
    ({"A": "x\0y"}, "NUL"),
    ({"A": "\0"}, "NUL"),
    ({"1A": "x"}, "not valid"),
    ({"A-B": "x"}, "not valid"),
    ({"A B": "x"}, "not valid"),
    ({"": "x"}, "not valid"),
    ({"A=B": "x"}, "not valid"),
    ({"Ä": "x"}, "not valid"),
    ({"A\n": "x"}, "not valid"),
    ({"A": 1}, "must be text"),
    ({"A": "\ud800"}, "UTF-8"),
] + [({name: "/home/llm/x"}, "steers the dynamic loader") for name in
     ("LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "PATH", "PYTHONPATH", "PYTHONHOME", "CORTEX_HOOK_POLICY")])
def test_render_env_rejects_nul_and_invalid_names(env, needle):
    with pytest.raises(UsageError) as info:
        render_env(env)
    assert needle in str(info.value)


def test_an_env_file_names_the_unit_it_was_written_for():
    """CORTEX_HOOK_UNIT is cortex-hook's own: the one CORTEX_HOOK_* name an env file holds."""
    assert render_env({"CORTEX_HOOK_UNIT": "a.service"}) == 'CORTEX_HOOK_UNIT="a.service"\n'
