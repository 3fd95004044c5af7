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
without closing them, or a step blocked when Ctrl-C comes, is
suite.training.peer_watch's. Starting this task's server on its own
address only, and waiting for the peers, is suite.training.cluster_server's.
Before their first step the workers compare what must agree
(RunConfig.must_agree, checked in suite.training.session), so that a
mismatch ends each of them in one line instead of a collective that never
completes.
"""
import json
import os
import re
import socket
import warnings
from dataclasses import dataclass, field

import tensorflow as tf

from suite.plumbing.errors import UserError, reason

# A strategy's input pipeline in graph mode warns, for every run, that tf.data
# options moved into the graph; it changes nothing here.
warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")

DEFAULT_STARTUP_TIMEOUT = 300  # seconds a worker waits for its peers (--startup_timeout)


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
