"""suite/training/peer_watch.py: a peer unreachable while a step runs is
named; between steps nothing is probed. (A step blocked when SIGTERM comes
is tests/training/test_distribute.py's, on a real cluster.)"""
import time

import pytest

import train
from helpers import free_ports
from suite.training import distribute
from suite.training.peer_watch import PeerWatch


def plan_of(argv):
    return distribute.plan(train.parse_args(argv), {})


@pytest.mark.slow
def test_peer_watch_names_a_peer_unreachable_during_a_run():
    port, = free_ports(1)  # nothing listens there
    plan = plan_of(["--worker_hosts", f"127.0.0.1:{port},127.0.0.1:1", "--task_index", "1"])
    lost = []
    watch = PeerWatch(plan, lost_after=0.6, probe_every=0.2,
                                 on_lost=lambda name, seconds: lost.append(name))
    try:
        time.sleep(1.0)
        assert not lost  # between runs nothing is probed
        with watch.running():
            deadline = time.monotonic() + 10
            while not lost and time.monotonic() < deadline:
                time.sleep(0.1)
        assert lost == [f"worker 0 (127.0.0.1:{port})"]
    finally:
        watch.stop()
