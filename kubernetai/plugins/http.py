"""One small HTTP listener per address, shared by health, ready and status pages."""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.logger import Logger
from twisted.web import resource, server

from kubernetai.corefile import Directive
from kubernetai.plugin import SetupContext
from kubernetai.values import integer

log = Logger()


class HTTPListener(StreamServerEndpointService):
    """An HTTP endpoint service that says (and keeps) the port it got, so ``:0`` is usable."""

    port: int | None = None
    next_root: resource.Resource | None = None  # the pages of a configuration being loaded

    def on_adopt(self) -> None:
        """The configuration that built ``next_root`` is now the running one: show its pages."""
        if self.next_root is not None:
            self.factory.resource = self.next_root
            self.next_root = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self._waitingForPort is not None:
            self._waitingForPort.addCallback(self._listening)

    def _listening(self, port: object) -> object:
        self.port = port.getHost().port  # type: ignore[attr-defined]
        log.info("kubernetai: {name} listening on port {port}", name=self.name, port=self.port)
        return port


class QuietSite(server.Site):
    """A site that logs neither its factory starting nor one line per request (probes every few seconds)."""

    noisy = False

    def log(self, request: object) -> None:
        pass


class Page(resource.Resource):
    """A leaf that answers GET with whatever ``render_page`` returns."""

    isLeaf = True

    def __init__(self, render_page: Callable[[], tuple[int, str, bytes]]) -> None:
        super().__init__()
        self.render_page = render_page

    def render_GET(self, request: server.Request) -> bytes:
        code, content_type, body = self.render_page()
        request.setResponseCode(code)
        request.setHeader(b"content-type", content_type.encode())
        return body

    render_HEAD = render_GET


def parse_address(d: Directive, text: str) -> tuple[str, int]:
    """``:8080``, ``127.0.0.1:8080``, ``[::1]:8080`` → (host, port); '' = all."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise d.error(f"invalid address {text!r} (want HOST:PORT or :PORT)")
    return host, integer(d, port, 0, 65535, "port")


def mount(ctx: SetupContext, d: Directive, address: str, path: bytes, page: resource.Resource) -> None:
    """Serve ``page`` at ``path`` on ``address``; a path is served once per address."""
    host, port = parse_address(d, address)

    def make() -> resource.Resource:
        previous = ctx.server.previous
        kept = previous.shared_value(("http", host, port)) if previous is not None else None
        if kept is not None:
            # A reload: the listener stays open and shows the new pages once the new configuration
            # is adopted (never before: a reload that fails later leaves the running one as it was).
            root = resource.Resource()
            root.listener = kept.listener  # type: ignore[attr-defined]
            kept.listener.next_root = root
            ctx.server.add_service(kept.listener)
            return root
        root = resource.Resource()
        if ctx.server.worker:
            return root  # one process serves /health, /ready, /metrics: the primary (workers.py)
        endpoint: TCP4ServerEndpoint | TCP6ServerEndpoint
        if ":" in host:
            endpoint = TCP6ServerEndpoint(ctx.reactor, port, interface=host)
        else:
            endpoint = TCP4ServerEndpoint(ctx.reactor, port, interface=host)
        site = QuietSite(root)
        svc = HTTPListener(endpoint, site)
        svc._raiseSynchronously = True
        svc.setName(f"http {host or '*'}:{port}")
        ctx.server.add_service(svc)
        root.listener = svc  # type: ignore[attr-defined]
        return root

    root = ctx.server.shared(("http", host, port), make)
    if path in root.children:
        return
    root.putChild(path, page)
