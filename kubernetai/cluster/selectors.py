"""Kubernetes label selectors: parse, canonical string (sent to the API), match.

Grammar as apimachinery's labels.Parse: comma-separated requirements of the
forms ``k``, ``!k``, ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``,
``k notin (a,b)``, ``k>n``, ``k<n``.  The canonical string sorts
requirements by key and set values, as ``Selector.String()`` does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import attrs

from kubernetai.lazy_repr import LazyRepr

__all__ = ["SelectorError", "Requirement", "Selector", "parse_selector"]

_KEY = re.compile(r"^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?/)?[a-z0-9A-Z]([-a-z0-9A-Z_.]{0,61}[a-z0-9A-Z])?$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
_TOKEN = re.compile(r"\s*(==|!=|=|\(|\)|,|!|>|<|[^\s=!(),<>]+)")


class SelectorError(ValueError):
    """The selector does not parse; the message says where."""


@attrs.frozen(repr=False)
class Requirement(LazyRepr):
    key: str
    op: str  # exists, !, =, !=, in, notin, gt, lt
    values: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!":
            return "!" + self.key
        if self.op in ("=", "!="):
            return f"{self.key}{self.op}{self.values[0]}"
        if self.op in ("gt", "lt"):
            return f"{self.key}{'>' if self.op == 'gt' else '<'}{self.values[0]}"
        return f"{self.key} {self.op} ({','.join(self.values)})"

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        try:
            have, want = int(value or ""), int(self.values[0])
        except ValueError:
            return False
        return have > want if self.op == "gt" else have < want


@attrs.frozen(repr=False)
class Selector(LazyRepr):
    requirements: tuple[Requirement, ...] = ()

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)

    def matches(self, labels: Mapping[str, str] | Iterable[tuple[str, str]]) -> bool:
        table = labels if isinstance(labels, Mapping) else dict(labels)
        return all(r.matches(table) for r in self.requirements)


def _check_key(key: str) -> str:
    if not _KEY.match(key) or len(key.split("/")[-1]) > 63:
        raise SelectorError(f"invalid label key {key!r}")
    return key


def _check_value(value: str) -> str:
    if not _VALUE.match(value):
        raise SelectorError(f"invalid label value {value!r}")
    return value


def parse_selector(text: str) -> Selector:
    tokens = [m.group(1) for m in _TOKEN.finditer(text) if m.group(1)]
    if "".join(tokens) != re.sub(r"\s+", "", text):
        raise SelectorError(f"unexpected characters in {text!r}")
    reqs: list[Requirement] = []
    i = 0

    def take() -> str:
        nonlocal i
        if i >= len(tokens):
            raise SelectorError(f"unexpected end of selector {text!r}")
        i += 1
        return tokens[i - 1]

    while i < len(tokens):
        tok = take()
        if tok == "!":
            reqs.append(Requirement(_check_key(take()), "!"))
        else:
            key = _check_key(tok)
            if i >= len(tokens) or tokens[i] == ",":
                reqs.append(Requirement(key, "exists"))
            else:
                op = take()
                if op in ("=", "=="):
                    reqs.append(Requirement(key, "=", (_check_value(take()),)))
                elif op == "!=":
                    reqs.append(Requirement(key, "!=", (_check_value(take()),)))
                elif op in (">", "<"):
                    n = take()
                    if not re.fullmatch(r"-?\d+", n):
                        raise SelectorError(f"{key}{op}{n}: not an integer")
                    reqs.append(Requirement(key, "gt" if op == ">" else "lt", (n,)))
                elif op in ("in", "notin"):
                    if take() != "(":
                        raise SelectorError(f"{key} {op}: expected '('")
                    values: list[str] = []
                    while True:
                        v = take()
                        if v == ")" and not values:
                            break
                        values.append(_check_value(v))
                        sep = take()
                        if sep == ")":
                            break
                        if sep != ",":
                            raise SelectorError(f"{key} {op}: expected ',' or ')', got {sep!r}")
                    if not values and op == "in":
                        raise SelectorError(f"{key} in (): needs at least one value")
                    reqs.append(Requirement(key, op, tuple(sorted(set(values)))))
                else:
                    raise SelectorError(f"unknown operator {op!r} after {key!r}")
        if i < len(tokens):
            if take() != ",":
                raise SelectorError(f"expected ',' in {text!r}")
            if i >= len(tokens):
                raise SelectorError(f"selector {text!r} ends with ','")
    return Selector(tuple(sorted(reqs, key=lambda r: r.key)))
