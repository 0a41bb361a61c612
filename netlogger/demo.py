"""`netlogger demo`: a sandbox, a sample policy, sample traffic, the live records.

Everything lives in things the demo makes and removes again: a scope cgroup
(never the root), a pin root of its own, and two network namespaces joined
by a veth pair. Traffic goes only to the peer namespace.
"""

from __future__ import annotations

import errno
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import TextIO

import dns.message
import dns.rdatatype

from netlogger import privileges, sandbox
from netlogger.config.check import check_source
from netlogger.config.source import parse
from netlogger.enforce import Enforcer, Target
from netlogger.enrich.dns import DnsEnricher
from netlogger.kernel import cgroup
from netlogger.pipeline.decode import Decoder
from netlogger.pipeline.dnsdecode import DnsDecoder
from netlogger.pipeline.enrich import AttributionEnricher
from netlogger.policy.compile import PolicySet
from netlogger.sinks.console import ConsoleSink
from netlogger.workload import Workload

RESOLVER = "198.18.0.53"
SAMPLE_POLICY = f"""\
policies:
  sample:
    dns: {{resolvers: [{RESOLVER}]}}
    icmp: deny
    allow:
      - {{cidr: 198.18.0.0/24, ports: [443], proto: tcp, name: peer-https}}
      - {{cidr: 198.18.0.0/24, ports: ["8000-8100"], proto: tcp, name: peer-dev}}
  domains:
    dns: {{resolvers: [{RESOLVER}]}}
    allow:
      - {{domain: allowed.demo.test, ports: [443], proto: tcp, name: demo-domain}}
"""
# What the demo's dnsmasq answers: one name the `domains` policy allows, one it does not.
DEMO_HOSTS = {"allowed.demo.test": ["198.19.0.10"], "blocked.demo.test": ["198.19.0.20"]}
BYPASS_SECONDS = 3


def decoder_for(policies: PolicySet) -> Decoder:
    by_id = policies.by_id()
    return Decoder(
        rule_name=lambda rid: policies.rules[rid].name if rid in policies.rules else None,
        policy_name=lambda pid: by_id[pid].name if pid in by_id else f"unknown({pid})",
        host_name=os.uname().nodename,
    )


class Demo:
    def __init__(self, out: TextIO, color: bool | None) -> None:
        self.out = out
        self.console = ConsoleSink(out, color)

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def step(self, title: str, action: Callable[[], int]) -> None:
        code = action()
        outcome = "ok" if code == 0 else errno.errorcode.get(code, str(code))
        self.say(f"\n> {title}  [{outcome}]")
        time.sleep(0.05)
        records = self.decoder.decode_all(self.ring.drain())
        records[:0] = self.decoder.decode_all(self.answers.drain())  # answers first, as the pump
        for enricher in self.enrichers:
            enricher.enrich(records)
        self.console.export(records)

    def run(self) -> None:
        privileges.require()
        tag = uuid.uuid4().hex[:8]
        checked = check_source(parse(SAMPLE_POLICY, "sample-policy.yaml"))
        with ExitStack() as stack:
            self.say(f"netlogger demo: sandbox {tag}\n\nsample policy:\n{SAMPLE_POLICY}")
            net = stack.enter_context(sandbox.network(tag))
            plane = stack.enter_context(sandbox.plane(f"netlogger-demo-{tag}"))
            scope = plane.scope
            agent_cg = stack.enter_context(sandbox.cgroup(scope, "agent"))
            enforcer = Enforcer(plane, checked.policies)
            enforcer.apply_policies(checked.policies)
            enforcer.enroll(Target(agent_cg, "sample", agent="demo-agent", project="demo"))
            self.say(f"scope cgroup {scope.path}, enrolled {agent_cg.path}")

            peer = stack.enter_context(Workload(net.peer_ns, None))
            peer("listen", addr=net.peer4, port=443)
            w = stack.enter_context(Workload(net.workload_ns, agent_cg.path))
            self.ring = stack.enter_context(plane.reader())
            self.answers = stack.enter_context(plane.dns_reader())
            self.decoder = decoder_for(checked.policies)
            DnsDecoder(self.decoder)
            self.enrichers = (AttributionEnricher(plane.labels.lookup), DnsEnricher())
            self._traffic(w, net, enforcer, agent_cg)

            dns_cg = stack.enter_context(sandbox.cgroup(scope, "dns"))
            enforcer.enroll(Target(dns_cg, "domains", agent="demo-dns", project="demo"))
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nl-demo-")))
            stack.enter_context(sandbox.resolver(net, RESOLVER, DEMO_HOSTS, workdir))
            self.say(f"\nenrolled {dns_cg.path} under policy `domains`; dnsmasq at {RESOLVER}")
            d = stack.enter_context(Workload(net.workload_ns, dns_cg.path))
            self._domains(d)
            self.say("\ncleaning up: detaching programs, removing cgroups and namespaces")
        self.say("done")

    def _domains(self, w: Workload) -> None:
        """A domain rule: the kernel admits the addresses of the name it allows, as the
        answer arrives; the other name resolves too, and its address stays denied."""
        for name in DEMO_HOSTS:
            found: list[str] = []
            self.step(f"resolve {name} through {RESOLVER}", partial(self._resolve, w, name, found))
            if not found:
                continue
            self.step(
                f"TCP connect to {found[0]}:443, the address {name} has",
                partial(w, "connect", family=4, type="tcp", addr=found[0], port=443),
            )

    @staticmethod
    def _resolve(w: Workload, name: str, found: list[str]) -> int:
        """An A query sent from the workload; the address of its answer goes to `found`."""
        query = dns.message.make_query(name, "A")
        reply = w("exchange", addr=RESOLVER, port=53, payload=query.to_wire().hex())
        if isinstance(reply, dict):
            return int(reply["oserror"])
        answer = dns.message.from_wire(bytes.fromhex(reply)).answer
        found += [rr.address for rrset in answer if rrset.rdtype == dns.rdatatype.A for rr in rrset]
        return 0

    def _traffic(
        self, w: Workload, net: sandbox.Net, enforcer: Enforcer, agent_cg: cgroup.Cgroup
    ) -> None:
        peer = net.peer4
        self.step(
            f"TCP connect to {peer}:443, a port the policy allows",
            lambda: w("connect_established", addr=peer, port=443),
        )
        self.step(
            f"TCP connect to {peer}:22, a port it does not",
            lambda: w("connect", family=4, type="tcp", addr=peer, port=22),
        )
        self.step(
            f"DNS query to {peer}, not one of the policy's resolvers",
            lambda: w("sendto", family=4, addr=peer, port=53),
        )
        self.step(
            "DNS query to 198.18.0.53, the policy's resolver",
            lambda: w("sendto", family=4, addr="198.18.0.53", port=53),
        )
        self.step(
            f"the same denied port through IPv4-mapped IPv6 (::ffff:{peer})",
            lambda: w("connect", family=6, type="tcp", addr=f"::ffff:{peer}", port=22),
        )
        self.step("a raw socket", lambda: w("socket", family=4, kind="raw"))
        self.step("a ping socket (policy: icmp deny)", lambda: w("socket", family=4, kind="ping"))

        enforcer.bypass(agent_cg.id, BYPASS_SECONDS)
        self.say(f"\n> bypass for {BYPASS_SECONDS}s: the kernel ends it, no timer in userspace")
        self.step(
            f"TCP connect to {peer}:22 during the bypass",
            lambda: w("connect", family=4, type="tcp", addr=peer, port=22),
        )
        for left in range(BYPASS_SECONDS, 0, -1):
            self.say(f"  waiting for the bypass to expire: {left}s")
            time.sleep(1)
        time.sleep(0.1)
        self.step(
            f"TCP connect to {peer}:22 after it expired",
            lambda: w("connect", family=4, type="tcp", addr=peer, port=22),
        )
