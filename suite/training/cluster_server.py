"""A cluster task's tf.distribute.Server: started on the address its own
entry names only (suite.training.listen_address), since a TensorFlow worker
runs whatever graph a peer sends it; then the wait until every peer answers
as a TensorFlow worker, saying whom it waits for."""
import errno
import ipaddress
import socket
import time

import tensorflow as tf

from suite.plumbing.errors import UserError, reason
from suite.training.listen_address import (CannotRestrict, listening_only_on,
                                             resolve_listen_address)

WAIT_MESSAGE_EVERY_SECS = 15


def reachable(address, timeout=3.0):
    """Whether something accepts connections at address (the cheap probe of a
    peer that has already answered as a TensorFlow worker)."""
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def answers_as_worker(address, timeout=3.0):
    """Whether a TensorFlow server answers at address: its worker service's
    GetStatus (an empty request) comes back. A program that merely accepts
    connections there, or speaks gRPC without being TensorFlow, does not."""
    import grpc  # TensorFlow's own dependency; imported here, for clusters only
    with grpc.insecure_channel(address) as channel:
        get_status = channel.unary_unary("/tensorflow.WorkerService/GetStatus")
        try:
            get_status(b"", timeout=timeout)
            return True
        except grpc.RpcError:
            return False


def _listen_address(plan):
    """The IP address this task listens on: its own cluster entry's host,
    resolved, checked to be an address of this machine and a free port."""
    host, port = plan.address.rsplit(":", 1)
    try:
        address = resolve_listen_address(host)
    except OSError as error:
        raise UserError(f"cannot resolve {host}, the host of {plan.task_name()} "
                        f"({reason(error)}): name this machine by an address it has")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As TensorFlow's own socket: a port a previous run left in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, int(port)))
        except OSError as error:
            if error.errno == errno.EADDRNOTAVAIL:
                raise UserError(f"{host} ({address}) is not an address of this machine, so "
                                f"it cannot be {plan.task_name()}: start each task on the "
                                f"machine its cluster entry names") from None
            raise UserError(f"cannot listen on {plan.address} as {plan.task_name()} "
                            f"({reason(error)}): is the port taken by another program or "
                            f"another train.py?") from None
    return address, int(port)


def _new_server(plan, config, log):
    """This task's tf.distribute.Server, listening on its own address only
    (see suite.training.listen_address); where that cannot be done, on every
    interface, with a warning saying so. An entry that names every interface
    (0.0.0.0 or ::) gets what it asks for."""
    address, port = _listen_address(plan)

    def server():
        return tf.distribute.Server(tf.train.ClusterSpec(plan.cluster),
                                    job_name=plan.task_type, task_index=plan.task_index,
                                    config=config, start=True)
    try:
        if ipaddress.ip_address(address.split("%")[0]).is_unspecified:
            return server()
        try:
            with listening_only_on(address, port) as redirected:
                started = server()
            if redirected():
                return started
            why = "TensorFlow's server did not bind through the C library"
        except CannotRestrict as error:
            why, started = str(error), server()
    except (tf.errors.OpError, ValueError) as error:
        raise UserError(f"cannot listen on {plan.address} as {plan.task_name()} "
                        f"({reason(error)}): is the port taken by another program or "
                        f"another train.py?")
    log(f"warning: this task listens on port {port} of every interface of this machine, "
        f"not only {address} ({why}): TensorFlow's workers run what any peer sends, so "
        f"keep port {port} behind a firewall", flush=True)
    return started


def start_server(plan, config, log=print):
    """Starts this task's tf.distribute.Server on its own address, then waits
    until every other task answers as a TensorFlow worker, saying whom it
    waits for; returns the server. A peer missing after plan.startup_timeout
    seconds is one line."""
    server = _new_server(plan, config, log)
    deadline = time.monotonic() + plan.startup_timeout
    missing = plan.peers()
    next_message = 0.0
    while missing:
        missing = [peer for peer in missing if not answers_as_worker(peer[2])]
        if not missing:
            break
        now = time.monotonic()
        names = ", ".join(f"{job} {i} at {address}" + (
            " (something there accepts connections, but not as a TensorFlow worker)"
            if reachable(address) else "") for job, i, address in missing)
        if now >= deadline:
            raise UserError(f"{names} did not start within {plan.startup_timeout:g} s "
                            f"(--startup_timeout): start it with the same cluster and its own "
                            f"task index, or check that this machine can reach it")
        if now >= next_message:
            log(f"waiting for {names} (up to {deadline - now:.0f} s more)", flush=True)
            next_message = now + WAIT_MESSAGE_EVERY_SECS
        time.sleep(0.5)
    return server
