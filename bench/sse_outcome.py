"""What `bench/bench_sse.py` measures of one run (N clients against one server) and how it
prints it: delivery counts, latencies, and the server's CPU and memory read from /proc.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from bench.timing import median_p99_ms

__all__ = [
    "HEADER",
    "LEGEND",
    "Outcome",
    "figures_line",
    "process_cpu_s",
    "process_rss_mb",
    "ratio_line",
]

TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> tuple[float, float]:
    """(user, kernel) CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def process_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Outcome:
    """One run of N clients against one server."""

    server: str
    clients: int
    expected: int  # events each client should get
    received: int
    short: int  # clients that missed at least one event
    duplicated: int  # clients that got an event twice
    latencies: list[float]
    connect_s: float = 0.0
    server_cpu_s: float = 0.0  # server process, during the events
    server_sys_s: float = 0.0  # the part of it spent in the kernel (socket writes)
    server_rss_mb: float = 0.0  # server process, all clients connected
    client_cpu_s: float = 0.0  # all client processes, during the events

    @property
    def expected_total(self) -> int:
        return self.clients * self.expected

    def row(self) -> str:
        median, p99 = median_p99_ms(self.latencies) if self.latencies else (0.0, 0.0)
        top = max(self.latencies, default=0.0) * 1000
        return (
            f"{self.clients:>7} {self.server:>7} {self.received:>9} {self.expected_total:>9}"
            f" {self.short:>5} {self.duplicated:>4} {median:>8.1f} {p99:>8.1f} {top:>8.1f}"
            f" {self.connect_s:>8.1f} {self.server_cpu_s:>7.2f} {self.server_sys_s:>7.2f}"
            f" {self.server_rss_mb:>7.0f}"
            f" {self.client_cpu_s:>7.2f}"
        )


HEADER = (
    f"{'clients':>7} {'server':>7} {'received':>9} {'expected':>9} {'short':>5} {'dup':>4}"
    f" {'median':>8} {'p99':>8} {'max':>8} {'connect':>8} {'srv cpu':>7} {'srv sys':>7}"
    f" {'srv rss':>7}"
    f" {'cli cpu':>7}"
)
LEGEND = (
    "latency append -> client in ms; short = clients missing an event, dup = clients with a "
    "duplicate;\nconnect = s to connect and subscribe all; srv cpu / cli cpu = CPU s of the "
    "server / all client processes while the events flow;\nsrv sys = the kernel's part of srv "
    "cpu (socket writes); srv rss = server MB with all clients connected"
)


def ratio_line(clients: int, rounds: list[list[Outcome]], other: str) -> str | None:
    pairs = []
    for outcomes in rounds:
        by = {o.server: o for o in outcomes}
        if other in by and by["gateway"].latencies and by[other].latencies:
            gw, base = median_p99_ms(by["gateway"].latencies), median_p99_ms(by[other].latencies)
            pairs.append((gw[0] / base[0], gw[1] / base[1]))
    if not pairs:
        return None
    med = statistics.median(p[0] for p in pairs)
    p99 = statistics.median(p[1] for p in pairs)
    return (
        f"{clients:>7} gateway/{other:<6} median x{med:.2f}  p99 x{p99:.2f}  ({len(pairs)} rounds)"
    )


def figures_line(clients: int, rounds: list[list[Outcome]], server: str) -> str | None:
    runs = [o for outcomes in rounds for o in outcomes if o.server == server and o.latencies]
    if not runs:
        return None
    figures = [median_p99_ms(o.latencies) for o in runs]
    med = statistics.median(f[0] for f in figures)
    p99 = statistics.median(f[1] for f in figures)
    lost = sum(o.expected_total - o.received for o in runs)
    return f"{clients:>7} {server:<14} median {med:7.1f} ms  p99 {p99:7.1f} ms  lost {lost}"
