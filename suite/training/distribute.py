"""Data-parallel training on TensorFlow's own distributed runtime: the devices
of one machine and the machines of a cluster, for train.py.

    one machine   --num_gpus N (default: every GPU TensorFlow sees): one replica
                  of the model per GPU, tf.distribute.MirroredStrategy, the
                  gradients summed with NCCL. --num_cpu_replicas N does the
                  same on N logical CPU devices: no faster, but the same
                  program, so the multi-device path is tested without a GPU.
    a cluster     TF_CONFIG (Kubeflow's TFJob and every TensorFlow launcher
                  set it) or --worker_hosts/--task_index (TF-slim's names):
                  MultiWorkerMirroredStrategy, synchronous, gradients summed
                  by collective all-reduce (ring on CPUs, NCCL on GPUs), no
                  parameter servers.

--batch_size is per replica: a step trains on batch_size x replicas images
(the global batch), and the default learning rate follows the global batch
(the linear scaling rule); model.json records both.

Graph mode only: the strategy is built inside train.py's tf.Graph. In a
cluster each process starts its tf.distribute.Server itself (the strategy
starts one only in eager mode), and its session runs on that server.

What happens when a peer goes away: a killed process closes its sockets, and
the collective that waits on it fails at once with UnavailableError naming
the task; lost_peer_error() turns that into one line. A peer that vanishes
without closing them (a machine switched off, a network cut) would leave
the step waiting forever, so PeerWatch probes the peers while a step runs
and ends the process, naming the task, once one has been unreachable for
LOST_AFTER_SECS; it also ends a worker whose step still waits
STOP_GRACE_SECS after a Ctrl-C or SIGTERM.

What keeps a cluster safe and its workers in step: each server listens only
on the address its own entry names (suite.training.listen_address), since
a TensorFlow worker runs whatever graph a peer sends; a peer counts as
started only when it answers as a TensorFlow worker; and before their first
step the workers compare what must agree (RunConfig.must_agree), so that a
mismatch ends each of them in one line instead of a collective that never
completes.
"""
import contextlib
import errno
import json
import os
import re
import select
import signal
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field

import tensorflow as tf
from tensorflow.python.client.session import SessionInterface

from suite.plumbing.errors import UserError, reason
from suite.training.listen_address import (CannotRestrict, listening_only_on,
                                             resolve_listen_address)

# A strategy's input pipeline in graph mode warns, for every run, that tf.data
# options moved into the graph; it changes nothing here.
warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")

LOST_AFTER_SECS = 30      # a peer unreachable this long during a step is lost
STOP_GRACE_SECS = 10      # after Ctrl-C or SIGTERM, the longest a step may go on
PROBE_EVERY_SECS = 5
WAIT_MESSAGE_EVERY_SECS = 15
DEFAULT_STARTUP_TIMEOUT = 300


@dataclass
class Plan:
    """Where the replicas of one run are: this process's devices, and the cluster."""
    local_devices: list                  # this process's replicas, e.g. ["/gpu:0", "/gpu:1"]
    device_type: str = "CPU"             # "GPU" or "CPU"
    logical_cpus: int = 1                # CPU devices the session must create
    cluster: dict = None                 # {"worker": ["host:port", ...]} or None
    task_type: str = "worker"
    task_index: int = 0
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT
    server: object = field(default=None, repr=False)

    @property
    def num_workers(self):
        if not self.cluster:
            return 1
        return sum(len(self.cluster.get(job, [])) for job in ("chief", "worker"))

    @property
    def num_replicas(self):
        return self.num_workers * len(self.local_devices)

    @property
    def multi_worker(self):
        return self.cluster is not None

    @property
    def replicated(self):
        """Whether training goes through a tf.distribute strategy at all; one
        device in one process keeps the plain graph."""
        return self.multi_worker or len(self.local_devices) > 1

    @property
    def is_chief(self):
        if not self.cluster:
            return True
        if "chief" in self.cluster:
            return self.task_type == "chief"
        return self.task_index == 0

    @property
    def worker_index(self):
        """The position of this process among all workers, the chief first."""
        if self.task_type == "chief" or "chief" not in (self.cluster or {}):
            return self.task_index
        return self.task_index + 1

    @property
    def address(self):
        return self.cluster[self.task_type][self.task_index] if self.cluster else None

    def task_name(self, job=None, index=None):
        job, index = job or self.task_type, self.task_index if index is None else index
        return f"{job} {index}" + (f" ({self.cluster[job][index]})" if self.cluster else "")

    def peers(self):
        """(job, index, address) of every other process of the cluster."""
        return [(job, i, address) for job in ("chief", "worker")
                for i, address in enumerate((self.cluster or {}).get(job, []))
                if (job, i) != (self.task_type, self.task_index)]

    def describe(self):
        devices = f"{len(self.local_devices)} {self.device_type}" + (
            " replicas" if len(self.local_devices) > 1 else "")
        if not self.multi_worker:
            return devices
        role = "chief" if self.is_chief else "not the chief"
        return (f"{self.task_name()} of {self.num_workers} workers, {role}; {devices} "
                f"here, {self.num_replicas} replicas in all")


# ---------------------------------------------------------------------------
# The plan: from the flags, TF_CONFIG and the devices TensorFlow sees
# ---------------------------------------------------------------------------
def _parse_hosts(text, origin):
    hosts = [h.strip() for h in text.split(",") if h.strip()]
    for host in hosts:
        if not re.fullmatch(r"[^\s:]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}", host) \
                or not 0 < int(host.rsplit(":", 1)[1]) <= 65535:
            raise UserError(f"{origin}: {host!r} is not host:port (a port from 1 to 65535)")
    for i, host in enumerate(hosts):
        for other in hosts[:i]:
            if _same_socket(host, other):
                raise UserError(f"{origin} names one address twice: {other} and {host}"
                                + ("" if host == other else " are the same socket") +
                                "; give each task its own port")
    return hosts


def _same_socket(first, second):
    """Whether two host:port entries name one socket: the same port on hosts
    that resolve to a common address (127.0.0.1 and localhost). A host that
    does not resolve here (another machine's name) is compared by name."""
    (host1, port1), (host2, port2) = first.rsplit(":", 1), second.rsplit(":", 1)
    if int(port1) != int(port2):
        return False
    if host1.lower() == host2.lower():
        return True
    try:
        addresses = [{info[4][0] for info in socket.getaddrinfo(host.strip("[]"), None)}
                     for host in (host1, host2)]
    except OSError:
        return False
    return bool(addresses[0] & addresses[1])


def cluster_from_tf_config(text):
    """(cluster, task_type, task_index) from a TF_CONFIG value."""
    try:
        spec = json.loads(text)
        cluster, task = spec.get("cluster") or {}, spec.get("task") or {}
        task_type, task_index = task.get("type"), task.get("index", 0)
    except (ValueError, TypeError, AttributeError) as error:
        raise UserError(f"TF_CONFIG is not valid JSON of the form {{\"cluster\": "
                        f"{{\"worker\": [\"host:port\", ...]}}, \"task\": {{\"type\": \"worker\", "
                        f"\"index\": 0}}}} ({error})")
    if type(task_index) is not int:  # noqa: E721 (true is not 1, 1.9 is not 1, 1e400 is not a task)
        raise UserError(f"TF_CONFIG: task.index {json.dumps(task_index)} is not a whole "
                        f"number: give the task's position in its job, 0, 1, ...")
    other = sorted(set(cluster) - {"chief", "worker"})
    if other or task_type not in ("chief", "worker"):
        raise UserError(f"TF_CONFIG has {', '.join(other) or 'task type ' + repr(task_type)}: "
                        f"train.py runs a cluster of workers (and optionally a chief) with "
                        f"collective all-reduce, without parameter servers; for a separate "
                        f"evaluator run Evaluation.py --watch")
    if not isinstance(cluster.get("worker", []), list) or not isinstance(
            cluster.get("chief", []), list) or len(cluster.get("chief", [])) > 1:
        raise UserError("TF_CONFIG: cluster.worker must be a list of host:port, and "
                        "cluster.chief a list of at most one")
    cluster = {job: _parse_hosts(",".join(map(str, hosts)), f"TF_CONFIG cluster.{job}")
               for job, hosts in cluster.items() if hosts}
    if task_type not in cluster or not 0 <= task_index < len(cluster[task_type]):
        raise UserError(f"TF_CONFIG: task {task_type} {task_index} is not in its cluster "
                        f"{json.dumps(cluster)}")
    return cluster, task_type, task_index


def plan(args, environ=None):
    """The Plan of this run, checked: a wrong flag is one line, before anything starts."""
    environ = os.environ if environ is None else environ
    tf_config = environ.get("TF_CONFIG", "").strip()
    cluster, task_type, task_index = None, "worker", 0
    if args.worker_hosts is not None or args.task_index is not None:
        if tf_config:
            raise UserError("TF_CONFIG is set and so are --worker_hosts/--task_index: give one "
                            "of them (unset TF_CONFIG to use the flags)")
        if args.worker_hosts is None or args.task_index is None:
            raise UserError("--worker_hosts and --task_index go together")
        hosts = _parse_hosts(args.worker_hosts, "--worker_hosts")
        if args.task_index >= len(hosts):
            raise UserError(f"--task_index {args.task_index} is not a position in --worker_hosts "
                            f"({len(hosts)} workers: 0..{len(hosts) - 1})")
        cluster, task_index = {"worker": hosts}, args.task_index
    elif tf_config:
        cluster, task_type, task_index = cluster_from_tf_config(tf_config)
    if cluster and sum(len(v) for v in cluster.values()) == 1:
        cluster = None  # a "cluster" of one process is a plain run

    gpus = len(tf.config.list_physical_devices("GPU"))
    if args.num_cpu_replicas is not None:
        if gpus:
            raise UserError(f"--num_cpu_replicas is for machines without GPUs; this one has "
                            f"{gpus}: use --num_gpus")
        if cluster:
            raise UserError("--num_cpu_replicas is for one machine; in a cluster each "
                            "CPU-only worker trains one replica")
        if args.num_gpus is not None:
            raise UserError("give --num_gpus or --num_cpu_replicas, not both")
        count = args.num_cpu_replicas
        return Plan([f"/cpu:{i}" for i in range(count)], "CPU", logical_cpus=count,
                    startup_timeout=args.startup_timeout)
    if args.num_gpus is not None and args.num_gpus > gpus:
        raise UserError(f"--num_gpus {args.num_gpus}, but TensorFlow sees {gpus} GPU(s)"
                        + ("" if gpus else " (for several replicas without a GPU: "
                           "--num_cpu_replicas)"))
    count = gpus if args.num_gpus is None else args.num_gpus
    devices = [f"/gpu:{i}" for i in range(count)] if count else ["/cpu:0"]
    return Plan(devices, "GPU" if count else "CPU", cluster=cluster, task_type=task_type,
                task_index=task_index, startup_timeout=args.startup_timeout)


# ---------------------------------------------------------------------------
# The strategy, the session settings and the server
# ---------------------------------------------------------------------------
def make_strategy(plan):
    """The tf.distribute strategy of the plan (None for one device in one
    process). Call inside the training graph: built in eager mode,
    MultiWorkerMirroredStrategy would start a server of its own on this
    task's port."""
    if not plan.replicated:
        return None
    if tf.executing_eagerly():
        raise RuntimeError("make_strategy() belongs inside `with graph.as_default()`")
    if not plan.multi_worker:
        # Defaults: NCCL all-reduce across GPUs, a reduction on one device for CPUs.
        return tf.compat.v1.distribute.MirroredStrategy(plan.local_devices)
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(plan.cluster), task_type=plan.task_type, task_id=plan.task_index,
        num_accelerators={"GPU": len(plan.local_devices)} if plan.device_type == "GPU" else {},
        rpc_layer="grpc")
    # AUTO: NCCL between GPUs, ring all-reduce over gRPC between CPUs.
    return tf.compat.v1.distribute.experimental.MultiWorkerMirroredStrategy(
        cluster_resolver=resolver)


def session_config(plan, strategy, config):
    """config (a ConfigProto) with what the plan needs: the logical CPU devices;
    in a cluster the strategy's collective settings and a device filter that
    keeps this process's ops on its own task."""
    if plan.logical_cpus > 1:
        # An explicit ConfigProto ignores tf.config.set_logical_device_configuration.
        config.device_count["CPU"] = plan.logical_cpus
    if plan.multi_worker:
        config = strategy.update_config_proto(config)
    return config


def _reachable(address, timeout=3.0):
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
    interface, with a warning saying so."""
    address, port = _listen_address(plan)

    def server():
        return tf.distribute.Server(tf.train.ClusterSpec(plan.cluster),
                                    job_name=plan.task_type, task_index=plan.task_index,
                                    config=config, start=True)
    try:
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
            if _reachable(address) else "") for job, i, address in missing)
        if now >= deadline:
            raise UserError(f"{names} did not start within {plan.startup_timeout:g} s "
                            f"(--startup_timeout): start it with the same cluster and its own "
                            f"task index, or check that this machine can reach it")
        if now >= next_message:
            log(f"waiting for {names} (up to {deadline - now:.0f} s more)", flush=True)
            next_message = now + WAIT_MESSAGE_EVERY_SECS
        time.sleep(0.5)
    return server


_TASK = re.compile(r"/job:(chief|worker)/replica:\d+/task:(\d+)")


def lost_peer_error(plan, error):
    """A UserError naming the lost task for an error of a collective step in a
    cluster; None for an error that is not about a peer."""
    if not plan.multi_worker or not isinstance(error, tf.errors.OpError):
        return None
    text = str(getattr(error, "message", error))
    remote = re.search(r"remote target " + _TASK.pattern, text)
    tasks = [remote.groups()] if remote else _TASK.findall(text)
    others = [(job, int(i)) for job, i in tasks if (job, int(i)) != (plan.task_type,
                                                                      plan.task_index)]
    if others:
        job, index = others[0]
        who = plan.task_name(job, index) if index < len(plan.cluster.get(job, [])) else \
            f"{job} {index}"
    elif isinstance(error, (tf.errors.UnavailableError, tf.errors.AbortedError,
                            tf.errors.CancelledError, tf.errors.DeadlineExceededError)) \
            or "Collective" in text:
        who = "another task"
    else:
        return None
    cause = (re.search(r'grpc_message:"([^"]+)"', text)
             or re.search(r"aborted by: (.+)", text))
    return UserError(f"lost {who} ({cause.group(1) if cause else reason(error)}): "
                     f"every worker stops; "
                     f"start them all again with the same commands to resume from the last "
                     f"checkpoint")


# ---------------------------------------------------------------------------
# Peer watch: a step that waits on a vanished peer is ended, not left hanging
# ---------------------------------------------------------------------------
class PeerWatch:
    """Watches the session.runs of a cluster worker, which cannot be
    interrupted from Python once started:

    - it probes the peers every PROBE_EVERY_SECS while a run is in progress;
      when one has been unreachable for LOST_AFTER_SECS during a run, it
      prints a line naming it and ends the process with exit code 3;
    - it sees Ctrl-C and SIGTERM as they arrive (through signal.set_wakeup_fd,
      written by the C-level handler even while the main thread is blocked):
      a run still in progress STOP_GRACE_SECS after the signal, or a second
      signal during a run, ends the process with 128 + the signal's number.
      A step that ends in time lets the loop save and stop as usual; so that
      a slow machine's ordinary steps always do, the grace is at least twice
      the longest run so far.

    Nothing is saved on these exits; the checkpoints on disk stay as they
    were. Between runs nothing is probed, so the chief validating or saving
    after the last step, with the others gone, is fine."""

    def __init__(self, plan, lost_after=LOST_AFTER_SECS, probe_every=PROBE_EVERY_SECS,
                 on_lost=None, stop_grace=STOP_GRACE_SECS, on_stuck=None):
        self._plan, self._lost_after, self._probe_every = plan, lost_after, probe_every
        self._stop_grace = stop_grace
        self._on_lost = on_lost or self._exit_lost
        self._on_stuck = on_stuck or self._exit_stuck
        self._running_since = None
        self._longest_run = 0.0
        self._signals = []  # (signal number, when) of the signals received
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._wakeup = self._listen_for_signals()
        self._thread = threading.Thread(target=self._watch, name="PeerWatch", daemon=True)
        self._thread.start()

    def stop(self):
        self._stopped.set()
        self._thread.join()
        if self._wakeup is not None:
            read_end, write_end, previous = self._wakeup
            with contextlib.suppress(ValueError):  # not the main thread
                signal.set_wakeup_fd(previous)
            os.close(read_end)
            os.close(write_end)

    def running(self):
        return _Running(self)

    @staticmethod
    def _listen_for_signals():
        """(read end, write end, the previous wakeup fd) of the pipe the C-level
        signal handler writes each signal's number into; None outside the
        main thread, where Python allows no wakeup fd."""
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        try:
            previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        except ValueError:
            os.close(read_end)
            os.close(write_end)
            return None
        return read_end, write_end, previous

    def _watch(self):
        unreachable_since, next_probe = {}, 0.0
        while not self._stopped.is_set():
            self._receive_signals(timeout=min(0.5, self._probe_every))
            with self._lock:
                running_since = self._running_since
            now = time.monotonic()
            if running_since is None:
                unreachable_since.clear()
                continue
            if self._stuck(running_since, now):
                return
            if now < next_probe:
                continue
            next_probe = now + self._probe_every
            for job, index, address in self._plan.peers():
                if _reachable(address, timeout=min(3.0, self._probe_every)):
                    unreachable_since.pop((job, index), None)
                    continue
                since = max(unreachable_since.setdefault((job, index), now), running_since)
                if now - since >= self._lost_after:
                    self._on_lost(self._plan.task_name(job, index), now - since)
                    return

    def _receive_signals(self, timeout):
        if self._wakeup is None:
            self._stopped.wait(timeout)
            return
        readable, _, _ = select.select([self._wakeup[0]], [], [], timeout)
        if readable:
            with contextlib.suppress(BlockingIOError):
                now = time.monotonic()
                self._signals += [(number, now) for number in os.read(self._wakeup[0], 64)]

    def _stuck(self, running_since, now):
        """Whether a signal has waited too long for the run in progress (then
        on_stuck has been called)."""
        during_run = [(number, when) for number, when in self._signals if when >= running_since]
        grace = max(self._stop_grace, 2 * self._longest_run)
        if self._signals and (len(during_run) >= 2 or now - self._signals[0][1] >= grace):
            number = (during_run or self._signals)[-1][0]
            self._on_stuck(signal.Signals(number).name, now - self._signals[0][1])
            return True
        return False

    @staticmethod
    def _exit_lost(name, seconds):
        _exit_now(f"lost {name}: unreachable for {seconds:.0f} s while this worker waited "
                  f"for it; every worker stops. Start them all again with the same commands "
                  f"to resume from the last checkpoint", 3)

    @staticmethod
    def _exit_stuck(signal_name, seconds):
        _exit_now(f"{signal_name}: this worker's step has waited {seconds:.0f} s for the other "
                  f"workers since; stopping without saving (the checkpoints on disk stay as "
                  f"they were)", 128 + signal.Signals[signal_name].value)


def _exit_now(message, code):
    """Ends the process from the watch's thread: the main thread is blocked
    in a session.run that Python cannot interrupt."""
    print(f"\nerror: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(code)


class _Running:
    def __init__(self, watch):
        self._watch = watch

    def __enter__(self):
        with self._watch._lock:
            self._watch._running_since = time.monotonic()

    def __exit__(self, *exc):
        with self._watch._lock:
            self._watch._longest_run = max(self._watch._longest_run,
                                           time.monotonic() - self._watch._running_since)
            self._watch._running_since = None


class WatchedSession(SessionInterface):
    """A session whose every run() is watched by a PeerWatch; train.py's loop
    and the Savers use it as the session itself."""

    def __init__(self, session, watch):
        self._session, self._watch = session, watch

    def run(self, *args, **kwargs):
        with self._watch.running():
            return self._session.run(*args, **kwargs)

    @property
    def graph(self):
        return self._session.graph

    @property
    def graph_def(self):
        return self._session.graph_def

    @property
    def sess_str(self):
        return self._session.sess_str

    def partial_run_setup(self, *args, **kwargs):
        return self._session.partial_run_setup(*args, **kwargs)

    def partial_run(self, *args, **kwargs):
        return self._session.partial_run(*args, **kwargs)
