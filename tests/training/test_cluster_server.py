"""suite/training/cluster_server.py: the server listens on its own address
only and answers as a TensorFlow worker; a plain listener is not taken for
one; a peer that never starts and a host that is not this machine are one
line."""
import socket
import time

import pytest
import tensorflow as tf

import train
from helpers import free_ports
from suite.plumbing.errors import UserError
from suite.training import cluster_server, distribute


def plan_of(argv):
    return distribute.plan(train.parse_args(argv), {})


@pytest.mark.slow
def test_a_peer_that_never_starts_is_one_line_after_the_timeout():
    mine, absent = free_ports(2)
    plan = plan_of(["--worker_hosts", f"127.0.0.1:{mine},127.0.0.1:{absent}",
                    "--task_index", "0", "--startup_timeout", "1.5"])
    said = []
    start = time.monotonic()
    with pytest.raises(UserError, match=f"worker 1 at 127.0.0.1:{absent} did not start "
                                        f"within 1.5 s"):
        cluster_server.start_server(plan, tf.compat.v1.ConfigProto(),
                                log=lambda *a, **k: said.append(a[0]))
    assert time.monotonic() - start < 10
    assert said and said[0].startswith(f"waiting for worker 1 at 127.0.0.1:{absent}")


def _listening(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_the_server_listens_on_its_own_address_only_and_answers_as_a_worker():
    """TensorFlow's server would listen on every interface: it listens on the
    address its entry names, so another address of this machine (127.0.0.2
    is one, as all of 127/8 is loopback) finds nothing there. A plain TCP
    listener is not taken for a TensorFlow worker."""
    mine, plain_port = free_ports(2)
    plan = plan_of(["--worker_hosts", f"localhost:{mine},127.0.0.1:{plain_port}",
                    "--task_index", "0", "--startup_timeout", "2"])
    said = []
    cluster_server._new_server(plan, tf.compat.v1.ConfigProto(), log=said.append)
    assert not said  # no warning: the address was restricted
    assert _listening("127.0.0.1", mine) and not _listening("127.0.0.2", mine)
    assert cluster_server.answers_as_worker(f"127.0.0.1:{mine}")
    with socket.create_server(("127.0.0.1", plain_port)):
        assert not cluster_server.answers_as_worker(f"127.0.0.1:{plain_port}", timeout=1)
        other, = free_ports(1)
        plan = plan_of(["--worker_hosts", f"127.0.0.1:{other},127.0.0.1:{plain_port}",
                        "--task_index", "0", "--startup_timeout", "2"])
        with pytest.raises(UserError, match="accepts connections, but not as a TensorFlow "
                                            "worker"):
            cluster_server.start_server(plan, tf.compat.v1.ConfigProto(), log=said.append)


def test_a_host_that_is_not_this_machine_is_one_line():
    port, = free_ports(1)
    plan = plan_of(["--worker_hosts", f"192.0.2.1:{port},127.0.0.1:1", "--task_index", "0"])
    with pytest.raises(UserError, match=r"192.0.2.1 \(192.0.2.1\) is not an address of this "
                                        r"machine, so it cannot be worker 0"):
        cluster_server.start_server(plan, tf.compat.v1.ConfigProto())


@pytest.mark.slow
def test_an_entry_that_names_every_interface_listens_on_every_interface():
    port, = free_ports(1)
    plan = plan_of(["--worker_hosts", f"0.0.0.0:{port},127.0.0.1:1", "--task_index", "0"])
    said = []
    cluster_server._new_server(plan, tf.compat.v1.ConfigProto(), log=said.append)
    assert not said
    assert _listening("127.0.0.1", port) and _listening("127.0.0.2", port)
