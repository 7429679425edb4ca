"""Snapshot clusters: a stanza's objects read from Kubernetes manifests on disk.

``manifests PATH...`` (files, directories, globs) instead of an API server:
multi-document YAML or JSON, ``v1 List`` documents exactly as ``kubectl get
… -o yaml`` writes them, and any ``kind: …List``.  Changes on disk are picked
up while running (inotify where the platform has it, polling otherwise) and
applied through the very same store path the watcher uses (page upserts,
then deletion of what is gone), so names appear and disappear as they would
from a live cluster.  A malformed file is reported with file and position,
and its last good contents keep serving.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python import filepath

from kubernetai.cluster import kinds
from kubernetai.cluster.objects import ObjectError
from kubernetai.cluster.options import KubernetesOptions
from kubernetai.cluster.store import ClusterStore
from kubernetai.lazy_repr import LazyRepr
from kubernetai.memory import release_memory

__all__ = ["ManifestError", "read_documents", "ManifestSource", "expand"]

log = Logger()

POLL_INTERVAL = 1.0


SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """A manifest file that cannot be read: names the file and position."""


def expand(patterns: Iterable[str]) -> list[str]:
    """Files named by paths, directories (their *.yaml/*.yml/*.json) and globs."""
    found: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        for path in matches:
            if os.path.isdir(path):
                for name in sorted(os.listdir(path)):
                    full = os.path.join(path, name)
                    if name.endswith(SUFFIXES) and os.path.isfile(full) and not name.startswith("."):
                        found.append(full)
            elif os.path.isfile(path):
                found.append(path)
    return list(dict.fromkeys(os.path.abspath(p) for p in found))


def _flatten(doc: Any) -> Iterable[dict]:
    if not isinstance(doc, dict):
        return
    kind = doc.get("kind") or ""
    if kind == "List" or (kind.endswith("List") and isinstance(doc.get("items"), list)):
        item_kind = kind[:-4] if kind != "List" else ""
        for item in doc.get("items") or ():
            if isinstance(item, dict):
                if item_kind and "kind" not in item:
                    item = {**item, "kind": item_kind}
                yield from _flatten(item)
        return
    yield doc


def read_documents(path: str) -> list[dict]:
    """Every object in one file; ManifestError with file:line:column otherwise."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ManifestError(f"{path}: cannot read: {e}") from None
    return parse_documents(path, data)


def parse_documents(path: str, data: bytes) -> list[dict]:
    """Every object in a file's bytes; ManifestError with file:line:column otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: cannot read: {e}") from None
    # Imported here, in the thread that reads manifests: ~15 ms of start-up that a
    # server reading only the API (or JSON manifests) never pays.
    import yaml

    # libyaml's loader when PyYAML has it: several times faster and far leaner.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        if path.endswith(".json"):
            docs = [json.loads(text)] if text.strip() else []
        else:
            docs = list(yaml.load_all(text, Loader=loader))
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}:{e.lineno}:{e.colno}: {e.msg}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{mark.line + 1}:{mark.column + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ManifestError(f"{path}:{where}{problem}") from None
    for doc in docs:
        if _shares_nodes(doc):
            raise ManifestError(f"{path}: YAML aliases (*name) are not accepted in manifests")
    return [obj for doc in docs for obj in _flatten(doc)]


def _shares_nodes(doc: Any) -> bool:
    """Whether any mapping or list is reached twice: a YAML alias.

    PyYAML builds an alias as a second reference to one object, so a small
    "billion laughs" file loads cheaply but expands exponentially when
    walked.  This walk visits each object once, so it costs what the file does.
    """
    seen: set[int] = set()
    stack = [doc]
    while stack:
        node = stack.pop()
        children: Iterable[Any]
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if id(node) in seen:
            return True
        seen.add(id(node))
        stack.extend(children)
    return False


MAX_MANIFEST = 64 * 2**20  # bytes per file: a List of 10,000 Services and their slices is ~20 MB


@attrs.frozen(repr=False)
class FileRead(LazyRepr):
    """What the worker made of one file; ``objects`` None when its bytes did not change."""

    objects: list[tuple[str, Any]] | None = None
    digest: bytes = b""
    error: str = ""
    unknown: frozenset[str] = frozenset()
    warnings: tuple[str, ...] = ()


def _read_files(paths: list[str], digests: dict[str, bytes | None], opts: KubernetesOptions) -> dict[str, FileRead]:
    """In a worker thread (or a child process): read, parse and shrink each file; touches no shared state."""
    wanted = {k.name: k for k in kinds.needed(opts)}
    out = {}
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_MANIFEST + 1)
        except OSError as e:
            out[path] = FileRead(error=f"{path}: cannot read: {e.strerror}")
            continue
        if len(data) > MAX_MANIFEST:
            out[path] = FileRead(error=f"{path}: larger than {MAX_MANIFEST // 2**20} MiB")
            continue
        digest = hashlib.sha256(data).digest()
        if digest == digests.get(path):
            out[path] = FileRead(digest=digest)
            continue
        try:
            docs = parse_documents(path, data)
        except ManifestError as e:
            out[path] = FileRead(error=str(e))
            continue
        objects, unknown, warnings = _shrink(docs, opts, wanted)
        out[path] = FileRead(objects, digest, "", frozenset(unknown), tuple(warnings))
    return out


# A parse this large goes to a child process: the parser's garbage, interleaved with the few
# strings the kept objects hold, would pin hundreds of MB of the server's heap for good (RSS
# 213 MB after a 3 MB manifest of 11,000 objects, whatever gc and malloc_trim do).  The child
# sends back only the compact objects, allocated afresh by unpickling, and exits.
PROCESS_PARSE_BYTES = 1 * 2**20


def read_manifests(paths: list[str], digests: dict[str, bytes | None], opts: KubernetesOptions) -> dict[str, FileRead]:
    """In a worker thread: ``_read_files``, in a child process when the files are large."""
    size = 0
    for path in paths:
        try:
            size += os.stat(path).st_size
        except OSError:
            pass
    if size < PROCESS_PARSE_BYTES:
        return _read_files(paths, digests, opts)
    import pickle
    import subprocess
    import sys

    try:
        done = subprocess.run(
            [sys.executable, "-m", "kubernetai.cluster.parse_child"],
            input=pickle.dumps((paths, digests, opts)),
            capture_output=True,
            timeout=600,
            check=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},  # finds kubernetai as we do
        )
        result: dict[str, FileRead] = pickle.loads(done.stdout)
        return result
    except (OSError, subprocess.SubprocessError, pickle.UnpicklingError, EOFError):
        return _read_files(paths, digests, opts)  # no child to be had: parse here, at the cost in memory


def _shrink(
    docs: list[dict], opts: KubernetesOptions, wanted: dict[str, kinds.Kind]
) -> tuple[list[tuple[str, Any]], set[str], list[str]]:
    """Filter and shrink a file's objects as soon as they are read."""
    out: list[tuple[str, Any]] = []
    unknown: set[str] = set()
    warnings: list[str] = []
    for obj in docs:
        kind = obj.get("kind") or ""
        if kind not in kinds.KINDS:
            unknown.add(kind)
            continue
        if kind not in wanted:
            continue
        try:
            if kinds.selected(opts, wanted[kind], obj):
                out.append((kind, kinds.convert(kind, obj)))
        except (ObjectError, TypeError, ValueError, AttributeError) as e:
            warnings.append(f"skipping a malformed {kind}: {e}")
    return out, unknown, warnings


@attrs.define(eq=False, repr=False)
class ManifestSource(Service, LazyRepr):
    """Feeds one stanza's store from manifest files, and keeps it current."""

    patterns: tuple[str, ...]
    opts: KubernetesOptions
    store: ClusterStore
    reactor: Any
    poll_interval: float = POLL_INTERVAL
    cluster: str = ""
    state: str = "starting"
    # path → (stamp, last good compact objects as (kind, value)); raw manifests are not kept.
    _files: dict[str, tuple[tuple, list[tuple[str, Any]]]] = attrs.Factory(dict)
    _errors: dict[str, str] = attrs.Factory(dict)
    _unknown: set[str] = attrs.Factory(set)
    _matched: dict[str, list[str]] = attrs.Factory(dict)  # pattern → the files it last matched
    # Reads and parses files off the reactor: (function, *args) → Deferred of its result.
    parse_in: Callable[..., defer.Deferred] = threads.deferToThread
    _digests: dict[str, bytes] = attrs.Factory(dict)  # path → hash of the bytes last parsed
    _reading: defer.Deferred | None = None
    _again: bool = False
    _poll: Any = None
    _notifier: Any = None
    _pending: Any = None

    def __attrs_post_init__(self) -> None:
        for kind in self.kinds():
            self.store.require((kind, ""))

    def kinds(self) -> list[str]:
        """The kinds this stanza would watch from an API server."""
        return [k.name for k in kinds.needed(self.opts)]

    # ------------------------------------------------------------ service
    def startService(self) -> None:
        Service.startService(self)
        self.reload()
        self._watch_inotify()
        self._poll = task.LoopingCall(self.reload)
        self._poll.clock = self.reactor
        self._poll.start(self.poll_interval, now=False)

    def stopService(self) -> None:
        Service.stopService(self)
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        if self._notifier is not None:
            self._notifier.loseConnection()
            self._notifier = None
        if self._pending is not None and self._pending.active():
            self._pending.cancel()

    def _watch_inotify(self) -> None:
        """Reload as soon as a watched directory changes (Linux); polling stays as a safety net."""
        try:
            from twisted.internet import inotify
        except ImportError:
            return
        try:
            notifier = inotify.INotify(self.reactor)
            notifier.startReading()
        except Exception:
            return
        dirs = set()
        for pattern in self.patterns:
            base = pattern if os.path.isdir(pattern) else os.path.dirname(os.path.abspath(pattern))
            while any(c in base for c in "*?["):
                base = os.path.dirname(base)
            if os.path.isdir(base):
                dirs.add(base)
        for d in sorted(dirs):
            try:
                notifier.watch(filepath.FilePath(d), callbacks=[self._changed])
            except Exception:
                continue
        self._notifier = notifier

    def _changed(self, _watch: Any, _path: Any, _mask: int) -> None:
        if self._pending is None or not self._pending.active():
            self._pending = self.reactor.callLater(0.05, self.reload)

    # ------------------------------------------------------------ reading
    def reload(self) -> None:
        """Re-read changed files and apply the differences to the store.

        Reading and parsing run in a worker thread (``parse_in``): a large
        file must not stop the answers.  The result is applied on the
        reactor.  A reload asked for while one runs runs once after it.
        """
        if self._reading is not None:
            self._again = True
            return
        paths = self._paths()
        changed = False
        for gone in set(self._files) - set(paths):
            del self._files[gone]
            self._errors.pop(gone, None)
            self._digests.pop(gone, None)
            changed = True
        todo: list[tuple[str, tuple, Any]] = []
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                continue
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            old = self._files.get(path)
            if old is None or old[0] != stamp:
                todo.append((path, stamp, old))
        if not todo:
            self._done(changed)
            return
        digests = {path: self._digests.get(path) for path, _, _ in todo}
        reading = self.parse_in(read_manifests, [p for p, _, _ in todo], digests, self.opts)
        self._reading = reading
        reading.addCallback(self._read, todo, changed)
        reading.addErrback(lambda f: log.failure("{cluster}: reading manifests failed", f, cluster=self.cluster))
        reading.addBoth(self._finished)

    def _paths(self) -> list[str]:
        paths: list[str] = []
        for pattern in self.patterns:
            matched = expand([pattern])
            if matched:
                self._matched[pattern] = matched
                if self._errors.pop(pattern, None):
                    log.info("{cluster}: {path} matches again", cluster=self.cluster, path=pattern)
            elif self._matched.get(pattern):
                # It matched before: a directory gone or a mount lost is an error, not an empty cluster.
                matched = self._matched[pattern]
                if pattern not in self._errors:
                    log.error(
                        "{cluster}: {path} matches no file any more; keeping its last good contents",
                        cluster=self.cluster,
                        path=pattern,
                    )
                self._errors[pattern] = "matches no file any more"
            paths += matched
        return list(dict.fromkeys(paths))

    def _read(self, results: dict[str, FileRead], todo: list[tuple[str, tuple, Any]], changed: bool) -> None:
        """On the reactor: apply what the worker read."""
        for path, stamp, old in todo:
            r = results[path]
            for kind in sorted(r.unknown - self._unknown):
                self._unknown.add(kind)
                log.info(
                    "{cluster}: ignoring objects of kind {kind!r} (first seen in {path})",
                    cluster=self.cluster,
                    kind=kind or "(none)",
                    path=path,
                )
            for warning in r.warnings:
                log.warn("{cluster}: {path}: {warning}", cluster=self.cluster, path=path, warning=warning)
            if r.error:
                if self._errors.get(path) != r.error:
                    log.error("{cluster}: {error}; keeping its last good contents", cluster=self.cluster, error=r.error)
                self._errors[path] = r.error
                # Remember the stamp so a broken file is not re-read every poll,
                # but keep serving what it held before.
                self._files[path] = (stamp, old[1] if old else [])
                continue
            if path in self._errors:
                log.info("{cluster}: {path} reads again", cluster=self.cluster, path=path)
                del self._errors[path]
            if r.objects is None:  # the same bytes as before (a touch): nothing to parse or apply
                self._files[path] = (stamp, old[1] if old else [])
                continue
            self._files[path] = (stamp, r.objects)
            self._digests[path] = r.digest
            changed = True
        self._done(changed)

    def _finished(self, result: Any) -> None:
        self._reading = None
        if self._again and self.running:
            self._again = False
            self.reload()

    def _done(self, changed: bool) -> None:
        if changed or not self.store.synced:
            self._apply()
            release_memory()

    def _apply(self) -> None:
        by_kind: dict[str, list] = {k: [] for k in self.kinds()}
        for _, (_, objects) in sorted(self._files.items()):
            for kind, value in objects:
                by_kind[kind].append(value)
        for kind, objs in by_kind.items():
            self.store.relist((kind, ""), objs)
        self.state = "synced" if not self._errors else f"{len(self._errors)} file(s) unreadable"

    def status(self) -> dict:
        return {"files": len(self._files), "unreadable": dict(self._errors)}
