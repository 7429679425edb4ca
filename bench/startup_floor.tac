"""Twisted's own start-up floor for a DNS server under twistd (bench/startup.py --floor).

The least a twistd DNS server does before its first answer: twistd, the
reactor, ``twisted.names.dns``, one UDP port on 127.0.0.1 (OS-picked, logged
as kubernetai logs it) answering every query with one A record.  No
kubernetai code: the time from start to its first answer is what any
twistd-hosted DNS server pays on this machine.
"""

from twisted.application import internet, service
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.names import dns

log = Logger()


class Answer(DatagramProtocol):
    def startProtocol(self) -> None:
        log.info("floor listening on 127.0.0.1 port {port} (udp+tcp)", port=self.transport.getHost().port)

    def datagramReceived(self, data: bytes, addr: tuple) -> None:
        m = dns.Message()
        m.fromStr(data)
        m.answer = 1
        m.answers = [dns.RRHeader(m.queries[0].name.name, dns.A, dns.IN, 5, dns.Record_A("192.0.2.1", 5))]
        self.transport.write(m.toStr(), addr)


application = service.Application("floor")
internet.UDPServer(0, Answer(), interface="127.0.0.1").setServiceParent(application)
