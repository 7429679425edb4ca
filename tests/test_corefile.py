"""The Corefile grammar, table-driven, including every error path."""

from __future__ import annotations

import os

import pytest

from kubernetai.corefile import CorefileError, Directive, parse_file, parse_text, tokenize


def known(name: str) -> bool:
    return name in {"errors", "log", "health", "ready", "kubernetai", "hosts", "forward", "bind", "lameduck", "x"}


def parse(text: str, environ=None):
    return parse_text(text, "Corefile", known, environ or {})


def shape(blocks):
    """Blocks as plain tuples, easy to compare."""

    def d(x: Directive):
        return (x.name, x.args, tuple(d(c) for c in x.block) if x.block is not None else None)

    return [(b.keys, tuple(d(x) for x in b.directives)) for b in blocks]


GOOD = [
    ("one block", ". {\n errors\n}\n", [((".",), (("errors", (), None),))]),
    ("no braces (single block)", ".:1053\nerrors\nlog\n", [((".:1053",), (("errors", (), None), ("log", (), None)))]),
    ("several keys one line", "a.org b.org:53 {\n log\n}", [(("a.org", "b.org:53"), (("log", (), None),))]),
    ("comma-continued keys", "a.org,\nb.org {\n log\n}", [(("a.org", "b.org"), (("log", (), None),))]),
    ("open brace on next line", "a.org\n{\n log\n}", [(("a.org",), (("log", (), None),))]),
    (
        "comment anywhere",
        "# top\n. { # here\n  log # there\n  errors#mid\n}",
        [((".",), (("log", (), None), ("errors", (), None)))],
    ),
    ("quoted token with spaces", '. {\n  log "a b" c\n}', [((".",), (("log", ("a b", "c"), None),))]),
    ("escaped quote in quotes", '. {\n  log "a\\"b"\n}', [((".",), (("log", ('a"b',), None),))]),
    ("other backslash kept", '. {\n  log "a\\nb"\n}', [((".",), (("log", ("a\\nb",), None),))]),
    ("quote mid-word is literal", '. {\n  log a"b\n}', [((".",), (("log", ('a"b',), None),))]),
    (
        "quoted token spans lines",
        '. {\n  log "a\nb" c\n  errors\n}',
        [((".",), (("log", ("a\nb", "c"), None), ("errors", (), None)))],
    ),
    ("no line continuation", ". {\n  log a\n  b\n}", None),  # b is an unknown directive: checked below
    (
        "nested block",
        ". {\n health {\n  lameduck 5s\n }\n}",
        [((".",), (("health", (), (("lameduck", ("5s",), None),)),))],
    ),
    (
        "empty nested block",
        ". {\n kubernetai cluster.local {\n }\n}",
        [((".",), (("kubernetai", ("cluster.local",), ()),))],
    ),
    ("brace mid-line is an argument (Caddy)", ". {\n health {\n  lameduck 5s }\n }\n}", None),
    ("env substitution", ". {\n log {$NAME} {%OTHER%} {$UNSET}x\n}", [((".",), (("log", ("v1", "v2", "x"), None),))]),
    (
        "env in keys and quoted tokens",
        '{$ZONE}:{$PORT} {\n log "{$NAME} y"\n}',
        [(("z.org:1053",), (("log", ("v1 y",), None),))],
    ),
    ("env value with spaces stays one token", ". {\n log {$SPACED}\n}", [((".",), (("log", ("a b",), None),))]),
    ("BOM and CRLF", "\ufeff. {\r\n log\r\n}\r\n", [((".",), (("log", (), None),))]),
    (
        "snippet and import",
        "(common) {\n errors\n log\n}\n. {\n import common\n hosts\n}",
        [((".",), (("errors", (), None), ("log", (), None), ("hosts", (), None)))],
    ),
    (
        "snippet imported in two blocks",
        "(c) {\n log\n}\na.org {\n import c\n}\nb.org {\n import c\n}",
        [(("a.org",), (("log", (), None),)), (("b.org",), (("log", (), None),))],
    ),
    (
        "import inside a directive block",
        "(opts) {\n lameduck 5s\n}\n. {\n health {\n  import opts\n }\n}",
        [((".",), (("health", (), (("lameduck", ("5s",), None),)),))],
    ),
    (
        "same snippet twice in a row",
        "(a) {\n log\n}\n. {\n import a\n import a\n}",
        [((".",), (("log", (), None), ("log", (), None)))],
    ),
    (
        "two blocks",
        "a.org {\n log\n}\nb.org:1053 {\n errors\n}",
        [(("a.org",), (("log", (), None),)), (("b.org:1053",), (("errors", (), None),))],
    ),
    ("empty quoted key skipped", '"" a.org {\n log\n}', [(("a.org",), (("log", (), None),))]),
    ("empty file", "", []),
    ("only comments", "# nothing\n", []),
]

ENV = {"NAME": "v1", "OTHER": "v2", "ZONE": "z.org", "PORT": "1053", "SPACED": "a b"}


@pytest.mark.parametrize(
    "name,text,expected", [g for g in GOOD if g[2] is not None], ids=[g[0] for g in GOOD if g[2] is not None]
)
def test_good(name, text, expected):
    assert shape(parse(text, ENV)) == expected


def test_brace_mid_line_becomes_argument():
    # As in Caddy: `lameduck 5s }` hands "}" to lameduck as an argument, and
    # the health block is never closed on its own line.
    with pytest.raises(CorefileError) as e:
        parse(". {\n health {\n  lameduck 5s }\n}")
    assert "Corefile:" in str(e.value)


BAD = [
    ("unknown directive", ". {\n  unknownthing\n}", 2, "unknown directive 'unknownthing'"),
    ("no line continuation: next line is a directive", ". {\n  log a\n  b\n}", 3, "unknown directive 'b'"),
    ("unterminated quote", '. {\n  log "abc\n}', 2, "unterminated quoted string"),
    ("missing close brace", ". {\n  log\n", 1, "missing its '}'"),
    ("stray close brace at top", "}\n", 1, "unexpected '}'"),
    ("stray close brace in directive", ". {\n log {\n }\n }\n}\n", 5, "unexpected '}'"),
    ("comma then brace", "a.org, {\n log\n}", 1, "extra comma"),
    ("comma at end of file", "a.org,", 1, "expected another address"),
    ("directive block not closed", ". {\n health {\n  lameduck 5s\n", 2, "'health' block is missing '}'"),
    (
        "open brace alone on a directive's next line",
        ". {\n health\n {\n }\n}",
        3,
        "a block must open on its directive's line",
    ),
    ("snippet redeclared", "(a) {\n log\n}\n(a) {\n errors\n}", 4, "redeclaration of previously declared snippet a"),
    ("snippet without brace", "(a)\nlog", 2, "must be followed by '{'"),
    ("snippet not closed", "(a) {\n log\n", 2, "snippet (a) is missing '}'"),
    ("import without argument", ". {\n import\n}", 2, "import: wrong argument count"),
    ("import with two arguments", ". {\n import a b\n}", 2, "takes only one argument"),
    ("import of a missing file", ". {\n import nothere.conf\n}", 2, "file to import not found: nothere.conf"),
    ("import glob with two wildcards", ". {\n import *.d/*.conf\n}", 2, "only contain one wildcard"),
    (
        "same snippet twice in a row",
        "(a) {\n log\n}\n. {\n import a\n import a\n unknownthing\n}",
        7,
        "unknown directive",
    ),
    ("import of a snippet into itself", "(a) {\n import a\n}\n. {\n import a\n}", 2, "import loop"),
]


@pytest.mark.parametrize("name,text,line,message", BAD, ids=[b[0] for b in BAD])
def test_bad(name, text, line, message):
    with pytest.raises(CorefileError) as e:
        parse(text)
    assert e.value.file == "Corefile"
    assert e.value.line == line, str(e.value)
    assert message in str(e.value)
    assert str(e.value).startswith(f"Corefile:{line}: ")


def test_import_files_relative_to_importing_file(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "a.conf").write_text("log\n")
    (tmp_path / "conf.d" / "b.conf").write_text("import ../more/c.conf\n")
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "c.conf").write_text("errors\n")
    core = tmp_path / "Corefile"
    core.write_text(". {\n import conf.d/*.conf\n hosts\n}\n")
    blocks = parse_file(str(core), known, {})
    assert [d.name for d in blocks[0].directives] == ["log", "errors", "hosts"]
    assert blocks[0].directives[1].file.endswith("c.conf")


def test_import_empty_glob_is_not_an_error(tmp_path):
    core = tmp_path / "Corefile"
    core.write_text(". {\n import none/*.conf\n log\n}\n")
    assert [d.name for d in parse_file(str(core), known, {})[0].directives] == ["log"]


def test_import_whole_server_blocks(tmp_path):
    (tmp_path / "zones.conf").write_text("b.org {\n log\n}\n")
    core = tmp_path / "Corefile"
    core.write_text("import zones.conf\na.org {\n errors\n}\n")
    assert [b.keys for b in parse_file(str(core), known, {})] == [("b.org",), ("a.org",)]


def test_file_import_loop_is_detected(tmp_path):
    (tmp_path / "a.conf").write_text("import b.conf\n")
    (tmp_path / "b.conf").write_text("import a.conf\n")
    core = tmp_path / "Corefile"
    core.write_text(". {\n import a.conf\n}\n")
    with pytest.raises(CorefileError) as e:
        parse_file(str(core), known, {})
    assert "import loop" in str(e.value)
    assert e.value.file.endswith("b.conf")


def test_self_import_is_detected(tmp_path):
    core = tmp_path / "Corefile"
    core.write_text(". {\n import Corefile\n}\n")
    with pytest.raises(CorefileError, match="import loop"):
        parse_file(str(core), known, {})


def test_error_in_imported_file_names_that_file(tmp_path):
    (tmp_path / "bad.conf").write_text("\n\nunknownthing\n")
    core = tmp_path / "Corefile"
    core.write_text(". {\n import bad.conf\n}\n")
    with pytest.raises(CorefileError) as e:
        parse_file(str(core), known, {})
    assert (os.path.basename(e.value.file), e.value.line) == ("bad.conf", 3)


def test_missing_corefile(tmp_path):
    with pytest.raises(CorefileError, match="cannot read Corefile"):
        parse_file(str(tmp_path / "nope"), known, {})


def test_tokens_record_lines_and_quoted_breaks():
    toks = tokenize('a\n"b\nc" d\n', "F", {})
    assert [(t.text, t.line, t.breaks, t.quoted) for t in toks] == [
        ("a", 1, 0, False),
        ("b\nc", 2, 1, True),
        ("d", 3, 0, False),
    ]


def test_quoted_brace_is_text():
    blocks = parse('. {\n log "{"\n}')
    assert blocks[0].directives[0].args == ("{",)


def test_directive_error_helper_names_file_line_and_directive():
    d = parse(". {\n\n  log a\n}")[0].directives[0]
    err = d.error("bad thing")
    assert str(err) == "Corefile:3: log: bad thing"


def test_hostile_configuration_gets_one_line_each(tmp_path):
    """Issue 12, item 14: deep nesting, a device as hosts file, a kubeconfig that is a directory or not YAML."""
    from kubernetai.build import load_text
    from kubernetai.corefile import CorefileError

    (tmp_path / "kcdir").mkdir()
    (tmp_path / "bad.yaml").write_text("a: [unclosed\n")
    deep = ". {\n kubernetai cluster.local {\n" + "x {\n" * 3000 + "}\n" * 3000 + " }\n}"
    cases = {
        deep: "blocks nested more than 32 deep",
        ". {\n hosts /dev/zero\n}": "hosts: /dev/zero: not a regular file",
        f". {{\n kubernetai cluster.local {{\n  kubeconfig {tmp_path / 'kcdir'}\n }}\n}}": "is not a file",
        f". {{\n kubernetai cluster.local {{\n  kubeconfig {tmp_path / 'bad.yaml'}\n }}\n}}": "not a readable kubeconfig",
        '. {\n bind "bad\nname"\n}': "bad\\nname",  # a quoted token with a newline, echoed escaped
    }
    for text, wanted in cases.items():
        with pytest.raises(CorefileError) as e:
            load_text(text, 53, None, file=str(tmp_path / "Corefile"))
        message = str(e.value)
        assert wanted in message and "\n" not in message, message
