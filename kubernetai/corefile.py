"""Corefile (Caddyfile) lexer and parser, faithful to CoreDNS's grammar.

Pure: no Twisted, no I/O beyond reading the Corefile and the files it
imports.  Every error is a :class:`CorefileError` that names the file, the
line and what is wrong, so that ``twistd kubernetai`` can refuse a bad
configuration before it starts anything.
"""

from __future__ import annotations

import functools
import glob
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import attrs

from kubernetai.lazy_repr import LazyRepr

__all__ = [
    "CorefileError",
    "Token",
    "Directive",
    "ServerBlock",
    "tokenize",
    "parse_text",
    "parse_file",
    "read_corefile",
]

# Whether a name is a registered directive ("unknown directive" otherwise).
DirectiveCheck = Callable[[str], bool]

MAX_SNIPPET_EXPANSIONS = 10_000
MAX_FILE_EXPANSIONS = 100_000


class CorefileError(Exception):
    """A Corefile problem, located at ``file:line``."""

    def __init__(self, file: str, line: int, message: str) -> None:
        # Always one line: a quoted token may hold newlines or other control characters.
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        super().__init__(f"{file}:{line}: {message}")
        self.file = file
        self.line = line
        self.message = message
        self.errors: tuple[CorefileError, ...] = (self,)

    @classmethod
    def several(cls, errors: list[CorefileError]) -> CorefileError:
        """All of ``errors`` in one exception: one ``file:line: problem`` line each."""
        if len(errors) == 1:
            return errors[0]
        first = errors[0]
        combined = cls(first.file, first.line, first.message)
        combined.errors = tuple(errors)
        combined.args = ("\n".join(str(e) for e in errors),)
        return combined


# CoreDNS's plugins (its plugin.cfg, 1.15), to tell "not available here" from a typo.
COREDNS_PLUGINS = frozenset(
    """root metadata geoip cancel proxyproto quic grpc_server https https3 timeouts multisocket reload nsid
    bufsize bind debug trace ready health pprof shed prometheus errors log dnstap local dns64 siit any chaos
    loadbalance tsig rewrite autopath acl cache header dnssec tls minimal template transfer dynupdate hosts
    route53 azure clouddns k8s_external kubernetes file auto secondary etcd loop forward grpc erratic whoami
    on sign view nomad""".split()
)


def unknown_directive(name: str, known: Iterable[str]) -> str:
    """Why ``name`` is refused: a CoreDNS plugin we lack, or a near miss of one we have."""
    if name in COREDNS_PLUGINS:
        return f"CoreDNS plugin '{name}' is not available in kubernetai"
    import difflib  # only for a Corefile with a mistake in it

    close = difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=0.75)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown directive '{name}'{hint}"


@attrs.frozen(repr=False)
class Token(LazyRepr):
    """One lexical token; ``breaks`` counts newlines inside a quoted token."""

    text: str
    file: str
    line: int
    quoted: bool = False
    breaks: int = 0
    # Names of the snippets/files whose import produced this token, to
    # detect import loops.
    imported_via: tuple[str, ...] = ()
    # Which expansion of an import produced the token (0 = the file itself):
    # line numbers only compare within one expansion.
    origin: int = 0

    @property
    def end_line(self) -> int:
        return self.line + self.breaks

    def is_brace(self, brace: str) -> bool:
        return not self.quoted and self.text == brace


@attrs.frozen(repr=False)
class Directive(LazyRepr):
    """A directive line: name, same-line arguments, optional nested block."""

    name: str
    args: tuple[str, ...]
    file: str
    line: int
    block: tuple[Directive, ...] | None = None

    def error(self, message: str) -> CorefileError:
        return CorefileError(self.file, self.line, f"{self.name}: {message}")

    @property
    def children(self) -> tuple[Directive, ...]:
        return self.block or ()


@attrs.frozen(repr=False)
class ServerBlock(LazyRepr):
    """A server block as written: its keys and its directives in order."""

    keys: tuple[str, ...]
    directives: tuple[Directive, ...]
    file: str
    line: int


# ---------------------------------------------------------------- lexer

_ENV = re.compile(r"\{\$([^}]*)\}|\{%([^}]*)%\}")


def substitute_env(text: str, environ: Mapping[str, str]) -> str:
    """Replace ``{$VAR}`` and ``{%VAR%}``; unset variables become empty."""
    return _ENV.sub(lambda m: environ.get(m.group(1) or m.group(2) or "", ""), text)


def tokenize(
    text: str,
    file: str,
    environ: Mapping[str, str] | None = None,
) -> list[Token]:
    """Split Corefile text into tokens, substituting the environment."""
    env = os.environ if environ is None else environ
    if text.startswith("\ufeff"):
        text = text[1:]
    text = text.replace("\r", "")
    tokens: list[Token] = []
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c == '"':
            start_line, buf, i = line, [], i + 1
            while True:
                if i >= n:
                    raise CorefileError(file, start_line, "unterminated quoted string")
                c = text[i]
                if c == "\\" and i + 1 < n and text[i + 1] == '"':
                    buf.append('"')
                    i += 2
                    continue
                if c == '"':
                    i += 1
                    break
                if c == "\n":
                    line += 1
                buf.append(c)
                i += 1
            tokens.append(
                Token(
                    substitute_env("".join(buf), env),
                    file,
                    start_line,
                    quoted=True,
                    breaks=line - start_line,
                )
            )
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] != "#":
                i += 1
            word = text[start:i]
            tokens.append(Token(substitute_env(word, env), file, line))
    return tokens


# ---------------------------------------------------------------- parser


class _Parser:
    """A cursor over a token list that imports splice into, like Caddy's."""

    def __init__(
        self,
        tokens: list[Token],
        file: str,
        is_directive: DirectiveCheck,
        environ: Mapping[str, str],
        names: Iterable[str] = (),
    ) -> None:
        self.tokens = tokens
        self.file = file
        self.cursor = -1
        self.is_directive = is_directive
        self._given_names = names
        self.unknown: list[CorefileError] = []
        self.environ = environ
        self.snippets: dict[str, list[Token]] = {}
        self.snippet_expansions = 0
        self.file_expansions = 0
        self.expansions = 0

    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        """The directives we have, for "did you mean": listed only then (listing the
        installed ones reads every distribution's metadata, ~20 ms of start-up)."""
        return tuple(self._given_names)

    # -- cursor helpers
    def next(self) -> bool:
        if self.cursor < len(self.tokens) - 1:
            self.cursor += 1
            return True
        self.cursor = len(self.tokens)
        return False

    @property
    def tok(self) -> Token:
        return self.tokens[self.cursor]

    def is_new_line(self) -> bool:
        if self.cursor < 1:
            return True
        if self.cursor > len(self.tokens) - 1:
            return False
        return not _same_line(self.tokens[self.cursor - 1], self.tokens[self.cursor])

    def err(self, message: str, tok: Token | None = None) -> CorefileError:
        if tok is None:
            if 0 <= self.cursor < len(self.tokens):
                tok = self.tokens[self.cursor]
            elif self.tokens:
                tok = self.tokens[-1]
        if tok is None:
            return CorefileError(self.file, 1, message)
        return CorefileError(tok.file, tok.line, message)

    def at_import(self) -> bool:
        return (
            0 <= self.cursor < len(self.tokens)
            and not self.tok.quoted
            and self.tok.text == "import"
            and self.is_new_line()
        )

    # -- grammar
    def parse_all(self) -> list[ServerBlock]:
        blocks: list[ServerBlock] = []
        while self.next():
            block = self.parse_one()
            if block is not None:
                blocks.append(block)
        if self.unknown:
            raise CorefileError.several(self.unknown)
        return blocks

    def parse_one(self) -> ServerBlock | None:
        first = self.tok
        keys = self.parse_keys()
        if keys is None:  # the file ended inside the key list (imports of nothing)
            return None
        if len(keys) == 1 and keys[0].startswith("(") and keys[0].endswith(")"):
            name = keys[0][1:-1]
            if name in self.snippets:
                raise self.err(f"redeclaration of previously declared snippet {name}", first)
            self.snippets[name] = self.snippet_tokens(name)
            return None
        directives = self.block_contents()
        return ServerBlock(tuple(keys), tuple(directives), first.file, first.line)

    def parse_keys(self) -> list[str] | None:
        keys: list[str] = []
        expecting_another = False
        while True:
            if self.cursor >= len(self.tokens):
                return keys or None
            if self.at_import():
                self.do_import()
                if self.cursor >= len(self.tokens) or not self.tokens:
                    return keys or None
                continue
            tok = self.tok
            if tok.is_brace("{"):
                if expecting_another:
                    raise self.err("expected another address but had '{' - check for extra comma")
                if not keys:
                    raise self.err("server block has no address before '{'")
                return keys
            if tok.is_brace("}"):
                raise self.err("unexpected '}': no matching opening brace")
            text = tok.text
            if text:
                if text.endswith(","):
                    text = text[:-1]
                    expecting_another = True
                else:
                    expecting_another = False
                if text:
                    keys.append(text)
            has_next = self.next()
            if expecting_another and not has_next:
                raise self.err("unexpected end of file: expected another address", tok)
            if not has_next:
                return keys
            if not expecting_another and self.is_new_line():
                return keys

    def snippet_tokens(self, name: str) -> list[Token]:
        if self.cursor >= len(self.tokens) or not self.tok.is_brace("{"):
            raise self.err(f"snippet ({name}) must be followed by '{{'")
        nesting, out = 1, list[Token]()
        while self.next():
            tok = self.tok
            if tok.is_brace("{"):
                nesting += 1
            elif tok.is_brace("}"):
                nesting -= 1
                if nesting == 0:
                    return out
            out.append(tok)
        raise self.err(f"unexpected end of file: snippet ({name}) is missing '}}'")

    def block_contents(self) -> list[Directive]:
        # parse_keys left the cursor on the token after the keys.
        opened = self.cursor < len(self.tokens) and self.tok.is_brace("{")
        open_tok = self.tok if opened else None
        if not opened:
            # A single server block may omit its braces.
            self.cursor -= 1
        directives: list[Directive] = []
        while self.next():
            if self.at_import():
                self.do_import()
                self.cursor -= 1
                continue
            if self.tok.is_brace("}"):
                if not opened:
                    raise self.err("unexpected '}': no matching opening brace")
                return directives
            directives.append(self.directive())
        if opened:
            raise self.err("unexpected end of file: this server block's '{' is missing its '}'", open_tok)
        return directives

    def directive(self) -> Directive:
        name_tok = self.tok
        if name_tok.is_brace("{"):
            raise self.err("unexpected '{': a block must open on its directive's line")
        if not self.is_directive(name_tok.text):
            # Reported with every other unknown one once the whole file is read.
            self.unknown.append(
                CorefileError(name_tok.file, name_tok.line, unknown_directive(name_tok.text, self.names))
            )
        collected = [name_tok]
        nesting = 0
        while self.next():
            tok = self.tok
            if tok.is_brace("{"):
                nesting += 1
            elif self.is_new_line() and nesting == 0:
                self.cursor -= 1
                break
            elif tok.is_brace("}") and nesting > 0:
                nesting -= 1
            elif tok.is_brace("}"):
                raise self.err("unexpected '}': no matching opening brace")
            elif self.at_import():
                self.do_import()
                self.cursor -= 1
                continue
            collected.append(tok)
        if nesting > 0:
            raise self.err(f"unexpected end of file: '{name_tok.text}' block is missing '}}'", name_tok)
        return build_directive(collected)

    def do_import(self) -> None:
        """Splice a snippet's or files' tokens in place of ``import X``."""
        imp = self.tok
        start = self.cursor
        if not self.next() or self.is_new_line():
            raise self.err("import: wrong argument count: expected exactly one argument", imp)
        arg = self.tok.text
        if self.next() and not self.is_new_line():
            raise self.err("import: takes only one argument (snippet name, file or glob pattern)", imp)
        if not arg:
            raise self.err("import: requires a non-empty snippet name or file path", imp)
        if arg in self.snippets:
            if arg in imp.imported_via:
                raise self.err(f"import: snippet {arg} imports itself (import loop)", imp)
            self.snippet_expansions += 1
            if self.snippet_expansions > MAX_SNIPPET_EXPANSIONS:
                raise self.err("import: too many snippet expansions (import loop?)", imp)
            chain = imp.imported_via + (arg,)
            self.expansions += 1
            imported = [attrs.evolve(t, imported_via=chain, origin=self.expansions) for t in self.snippets[arg]]
        else:
            imported = self.import_files(arg, imp)
        self.tokens[start : start + 2] = imported
        self.cursor = start

    def import_files(self, pattern: str, imp: Token) -> list[Token]:
        base = os.path.dirname(os.path.abspath(imp.file))
        path = pattern if os.path.isabs(pattern) else os.path.join(base, pattern)
        if path.count("*") > 1 or path.count("?") > 1 or ("[" in path and "]" in path):
            raise self.err(f"import: glob pattern may only contain one wildcard (* or ?): {pattern}", imp)
        if "*" in path or "?" in path:
            matches = sorted(glob.glob(path))
        else:
            if not os.path.isfile(path):
                raise self.err(f"import: file to import not found: {pattern}", imp)
            matches = [path]
        out: list[Token] = []
        for match in matches:
            real = os.path.realpath(match)
            if real in imp.imported_via or real == os.path.realpath(imp.file):
                raise self.err(f"import: {match} imports itself (import loop)", imp)
            self.file_expansions += 1
            if self.file_expansions > MAX_FILE_EXPANSIONS:
                raise self.err("import: too many file expansions (import loop?)", imp)
            try:
                with open(match, encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError) as e:
                raise self.err(f"import: cannot read {match}: {e}", imp) from None
            chain = imp.imported_via + (os.path.realpath(imp.file), real)
            self.expansions += 1
            out.extend(
                attrs.evolve(t, imported_via=chain, origin=self.expansions) for t in tokenize(text, match, self.environ)
            )
        return out


def _same_line(prev: Token, cur: Token) -> bool:
    return prev.file == cur.file and prev.origin == cur.origin and prev.end_line >= cur.line


def build_directive(tokens: Sequence[Token]) -> Directive:
    """Turn one directive's balanced token run into a Directive tree.

    Arguments are the tokens on the directive's own line up to a ``{``; the
    block holds one sub-directive per line up to the ``}`` that starts a
    line.  As in Caddy, a ``}`` in the middle of a line is an argument.
    """
    directive, end = _build(tokens, 0)
    if end != len(tokens):
        extra = tokens[end]
        if extra.is_brace("{"):
            raise CorefileError(extra.file, extra.line, "unexpected '{': a block must open on its directive's line")
        raise CorefileError(extra.file, extra.line, f"unexpected '{extra.text}' after '}}'")
    return directive


# Blocks inside a directive nest this deep at most (CoreDNS plugins use one
# or two levels); deeper is refused before Python's recursion limit is near.
MAX_NESTING = 32


def _build(tokens: Sequence[Token], i: int, depth: int = 0) -> tuple[Directive, int]:
    head = tokens[i]
    if depth > MAX_NESTING:
        raise CorefileError(head.file, head.line, f"blocks nested more than {MAX_NESTING} deep")
    args: list[str] = []
    prev = head
    i += 1
    while i < len(tokens) and _same_line(prev, tokens[i]) and not tokens[i].is_brace("{"):
        args.append(tokens[i].text)
        prev = tokens[i]
        i += 1
    if i < len(tokens) and _same_line(prev, tokens[i]) and tokens[i].is_brace("{"):
        open_tok = tokens[i]
        i += 1
        children: list[Directive] = []
        while True:
            if i >= len(tokens):
                raise CorefileError(
                    open_tok.file,
                    open_tok.line,
                    f"{head.text}: block is never closed ('}}' must start a line)",
                )
            if tokens[i].is_brace("}"):
                return Directive(head.text, tuple(args), head.file, head.line, tuple(children)), i + 1
            child, i = _build(tokens, i, depth + 1)
            children.append(child)
    return Directive(head.text, tuple(args), head.file, head.line), i


def parse_text(
    text: str,
    file: str,
    is_directive: DirectiveCheck,
    environ: Mapping[str, str] | None = None,
    names: Iterable[str] = (),
) -> list[ServerBlock]:
    """Parse Corefile text into server blocks (keys not yet normalised).

    Every unknown directive is reported at once (``CorefileError.errors``);
    ``names``, the directives there are, serve "did you mean".
    """
    env = dict(os.environ if environ is None else environ)
    parser = _Parser(tokenize(text, file, env), file, is_directive, env, names)
    return parser.parse_all()


def parse_file(
    path: str,
    is_directive: DirectiveCheck,
    environ: Mapping[str, str] | None = None,
    names: Iterable[str] = (),
) -> list[ServerBlock]:
    """Read and parse a Corefile; a missing file is a CorefileError too."""
    return parse_text(read_corefile(path), path, is_directive, environ, names)


def read_corefile(path: str) -> str:
    """A Corefile's text; one that cannot be read is a CorefileError."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise CorefileError(path, 0, f"cannot read Corefile: {e}") from None


def walk(directives: Sequence[Directive]) -> Iterator[Directive]:
    """Every directive and sub-directive, depth first."""
    for d in directives:
        yield d
        yield from walk(d.children)
