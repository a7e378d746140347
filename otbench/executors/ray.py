"""The Ray executor: chunks computed by a pool of Ray actors, on this machine, a multi-GPU box or a cluster.

How a chunk flows: the driver (the process running `otbench run | sweep | report --fill`) builds every defense
first, so training happens once, there, and the checkpoint files exist. It puts the dataset and the bytes of
every checkpoint it used into Ray's object store once, then sends each missing chunk as a small task (defense
class and config, attack class and settings, sample ids, chunk seed) to an actor, at most `DEPTH` in flight per
actor. An actor builds each defense once (its checkpoint from its own cache, written there first from the
object store when the node does not share the driver's cache or holds another file under that name), computes
the chunk through the runner (threat-model guard included) and returns the rows, wall time, device and
machine. The driver commits each result in one transaction (otbench.executors.dispatch): only the driver
writes SQLite.

Failures: an actor that dies mid-chunk is restarted (`max_restarts`) and its chunks are retried
(`max_task_retries`); a chunk is deterministic given its seed, so the retry gives the same rows, and nothing
of it was stored before. Ctrl-C in the driver kills the actors; committed chunks stay.

Ray is imported here only, and this module is imported only when `--executor ray` is asked for."""
from __future__ import annotations

import hashlib
import json
import os
import socket
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import OTBenchError, raise_if_interrupted
from ..runner import ChunkResult
from .options import check_address

DEPTH = 2  # chunks in flight per actor: the next one is queued while one computes
WAIT_S = 0.5  # longest the driver waits on Ray before it looks for a Ctrl-C again
MAX_RESTARTS = 3  # a worker process killed (OOM, preemption, a crash) is restarted this many times ...
MAX_TASK_RETRIES = 3  # ... and the chunks it held are retried
MAX_DEFENSES = 8  # defenses an actor keeps built (a long `report --fill` meets many); older ones are rebuilt


@dataclass(frozen=True)
class DefenseSpec:
    """How a worker rebuilds a defense the driver built: its class (pickled by reference, so importable on
    the workers) and full config; `undefended`: the view of its undefended network (otbench.checks)."""

    cls: type
    name: str
    config: str  # canonical JSON
    data: str  # the key of the dataset's object-store copy
    undefended: bool = False

    @property
    def key(self) -> str:
        return f"{self.cls.__module__}.{self.cls.__qualname__}|{self.config}|{self.data}|{self.undefended}"


@dataclass(frozen=True)
class ChunkTask:
    defense: DefenseSpec
    attack: type
    attack_name: str
    eps: float
    config: dict[str, Any]
    ids: list[int]
    seed: int


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def worker_device(requested: str):
    """The device inside a worker: Ray makes the GPUs it assigned the visible ones, so `cuda` is the first."""
    import torch

    if requested == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise OTBenchError("a Ray worker was given a GPU but torch sees no CUDA device on its node")
    return torch.device("cuda")


def reachable(address: str | None, timeout: float = 5.0) -> None:
    """A one-line error, at once, when a HOST:PORT cluster address answers nothing: ray.init would retry an
    unreachable address for minutes without a word (`auto`, `ray://...` and None are left to Ray)."""
    if not address or address == "auto" or "://" in address:
        return
    check_address(address)
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise OTBenchError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with "
                           f"`ray start --head --port {port}` or check --ray-address / RAY_ADDRESS") from None


def worker_shape(resources: dict[str, float], workers: int | None = None, gpus_per_worker: float | None = None,
                 threads: int | None = None, device: str = "auto") -> tuple[int, int, float]:
    """(workers, CPUs per worker, GPUs per worker) on a cluster with `resources` (ray.cluster_resources()):
    one worker per GPU by default when the cluster has GPUs and the device allows them, else one per CPU; one
    CPU per worker unless `threads` asks for more. Refused when the cluster cannot hold them all (Ray would
    wait for them forever)."""
    cpus, total_cpus, total_gpus = threads or 1, resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    use_gpu = device != "cpu" and total_gpus > 0 and gpus_per_worker != 0
    if device.startswith("cuda") and not use_gpu:
        raise OTBenchError(f"--device {device}: the Ray cluster has no GPU to give ({total_cpus:g} CPUs, "
                           f"{total_gpus:g} GPUs); use --device auto or cpu")
    gpus = float(gpus_per_worker or 1.0) if use_gpu else 0.0
    if workers is None:
        workers = max(1, int(total_gpus / gpus + 1e-9) if use_gpu else int(total_cpus // cpus))
    if workers * cpus > total_cpus or workers * gpus > total_gpus + 1e-9:
        raise OTBenchError(f"the Ray cluster has {total_cpus:g} CPUs and {total_gpus:g} GPUs: too few for {workers} "
                           f"workers of {cpus} CPU(s) and {gpus:g} GPU(s) each; lower --workers or --threads")
    return workers, cpus, gpus


class ChunkWorker:
    """The actor: builds each defense once (checkpoints from the cache, or from the object store), computes
    chunks, returns their rows. A user-facing error (a threat-model violation...) comes back as a value, so the
    driver prints it as one line."""

    def __init__(self, device: str, threads: int) -> None:
        import torch

        from ..provenance import machine, package_versions
        from ..training import set_quiet

        set_quiet(True)  # no training bars from inside workers
        torch.set_num_threads(threads)  # the actor's CPU share; equal thread counts give bit-identical numbers
        self.device = worker_device(device)
        self.host, self.versions = machine(), package_versions()
        self.data: dict[str, Any] = {}
        self.defenses: OrderedDict[str, Any] = OrderedDict()  # least recently used first
        self.attacks: dict[tuple, Any] = {}
        self.verified: set[str] = set()

    def pid(self) -> int:
        return os.getpid()

    def run(self, task: ChunkTask, data: list, checkpoints: dict[str, tuple[str, list]]) -> Any:
        from ..runner import compute_chunk

        try:
            defense = self._defense(task.defense, data, checkpoints)
            key = (task.defense.key, task.attack, task.eps, json.dumps(task.config, sort_keys=True, default=str))
            if key not in self.attacks:
                task.attack.name = task.attack_name  # a class registered only on the driver (a test's) has no name here
                self.attacks[key] = task.attack(defense, task.eps, **task.config)
            result = compute_chunk(defense, self.attacks[key], task.ids, task.seed)
        except OTBenchError as exc:
            return exc
        result.machine, result.versions = self.host, self.versions
        return result

    def _defense(self, spec: DefenseSpec, data: list, checkpoints: dict[str, tuple[str, list]]) -> Any:
        import ray

        from ..training import checkpoint_source

        if spec.key in self.defenses:
            self.defenses.move_to_end(spec.key)
            return self.defenses[spec.key]
        if spec.data not in self.data:
            self.data[spec.data] = ray.get(data[0])
        spec.cls.name = spec.name
        with checkpoint_source(lambda path: self._checkpoint(path, checkpoints)):
            defense = spec.cls(self.data[spec.data], json.loads(spec.config), self.device)
        if spec.undefended:
            from ..checks import UndefendedView

            defense = UndefendedView(defense)
        self.defenses[spec.key] = defense
        while len(self.defenses) > MAX_DEFENSES:
            old, _ = self.defenses.popitem(last=False)
            self.attacks = {k: a for k, a in self.attacks.items() if k[0] != old}
        return defense

    def _checkpoint(self, path: Path, table: dict[str, tuple[str, list]]) -> None:
        """Before the defense reads checkpoint `path` from this node's cache: if the driver used a file of that
        name and this node lacks it or holds another one (trained elsewhere), write the driver's bytes there from
        the object store, so no worker trains and every worker uses the driver's weights."""
        import ray

        from ..data.base import cache_dir

        try:
            rel = str(path.resolve().relative_to(cache_dir().resolve()))
        except ValueError:
            return
        if rel in self.verified or rel not in table:
            return
        digest, holder = table[rel]
        if not path.exists() or file_digest(path) != digest:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # the workers of one node may race here
            tmp.write_bytes(ray.get(holder[0]))
            tmp.replace(path)
        self.verified.add(rel)


class RayExecutor:
    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None,
                 gpus_per_worker: float | None = None, threads: int | None = None, device: str = "auto") -> None:
        import ray

        self.ray = ray
        self.started = not ray.is_initialized()  # a Ray this process already joined is left running
        if self.started:
            address = address or os.environ.get("RAY_ADDRESS") or None
            reachable(address)
            try:
                ray.init(address=address, include_dashboard=False, logging_level="WARNING",
                         log_to_driver=False)  # workers' prints must not mix into --json on stdout
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise OTBenchError(f"cannot start or reach Ray at {address or 'a new local instance'}: "
                                   f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        self.workers, self.cpus, self.gpus = worker_shape(ray.cluster_resources(), workers, gpus_per_worker, threads,
                                                          device)
        worker = ray.remote(ChunkWorker).options(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=MAX_RESTARTS,
                                                 max_task_retries=MAX_TASK_RETRIES)
        self.actors = [worker.remote("cuda" if self.gpus else "cpu", self.cpus) for _ in range(self.workers)]
        self.data: dict[int, tuple[str, Any, Any]] = {}  # id(dataset) -> (key, dataset kept alive, ObjectRef)
        self.specs: dict[int, tuple[Any, DefenseSpec]] = {}
        self.checkpoints: dict[str, tuple[str, list]] = {}

    # -- what the workers are sent -----------------------------------------------------------------------------
    def _data_key(self, data: Any) -> tuple[str, Any]:
        if id(data) not in self.data:
            self.data[id(data)] = (f"{data.name}#{len(self.data)}", data, self.ray.put(data))
        key, _, ref = self.data[id(data)]
        return key, ref

    def _spec(self, defense: Any) -> DefenseSpec:
        from ..checks import UndefendedView
        from ..registry import DEFENSES

        if id(defense) in self.specs:
            return self.specs[id(defense)][1]
        view = isinstance(defense, UndefendedView)
        base = defense.parent if view else defense
        if base.name not in DEFENSES or DEFENSES.get(base.name) is not type(base):
            raise OTBenchError(f"defense '{base.name}' was not built from the registry, so Ray workers cannot "
                               f"rebuild it; use --executor local")
        spec = DefenseSpec(type(base), base.name, json.dumps(base.config, sort_keys=True),
                           self._data_key(base.data)[0], view)
        self.specs[id(defense)] = (defense, spec)  # the defense is kept alive, so its id stays its own
        return spec

    def _share_checkpoints(self) -> None:
        """Every checkpoint the driver loaded or trained, into the object store once."""
        from ..data.base import cache_dir
        from ..training import used_checkpoints

        root = cache_dir()
        for path in used_checkpoints():
            try:
                rel = str(path.resolve().relative_to(root.resolve()))
            except ValueError:
                continue  # outside the cache: a user's file, which must exist on every node (README)
            if rel not in self.checkpoints:
                blob = path.read_bytes()
                self.checkpoints[rel] = (hashlib.sha256(blob).hexdigest(), [self.ray.put(blob)])

    # -- running -----------------------------------------------------------------------------------------------
    def map(self, work: list, progress: bool = False) -> Iterator[tuple[tuple, ChunkResult]]:
        """`progress` is the driver's bar over chunks (dispatch): a worker's queries are not visible here."""
        ray = self.ray
        self._share_checkpoints()
        queue = deque(range(len(work)))
        pending: dict[Any, tuple[int, Any]] = {}

        def submit(actor: Any) -> None:
            i = queue.popleft()
            cell, chunk, ids = work[i]
            spec = self._spec(cell.defense)
            _, data_ref = self._data_key(cell.defense.data)
            task = ChunkTask(spec, type(cell.attack), cell.attack.name, cell.attack.eps, dict(cell.attack.config),
                             list(ids), cell.chunk_seed(chunk))
            pending[actor.run.remote(task, [data_ref], self.checkpoints)] = (i, actor)

        for _ in range(DEPTH):
            for actor in self.actors:
                if queue:
                    submit(actor)
        while pending:
            # a timeout, so a Ctrl-C that Ray's wait swallowed is still seen within WAIT_S (errors.interrupt)
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
            raise_if_interrupted()
            if not ready:
                continue
            i, actor = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayActorError as exc:
                cell, chunk, _ = work[i]
                raise OTBenchError(f"the Ray worker computing chunk {chunk} of {cell.label} was lost beyond its "
                                   f"{MAX_RESTARTS} restarts and {MAX_TASK_RETRIES} retries ({type(exc).__name__}); "
                                   f"committed chunks are kept, rerun to resume") from None
            if isinstance(result, OTBenchError):
                raise result
            if queue:
                submit(actor)
            yield work[i], result

    def pids(self) -> list[int]:
        """The worker processes' ids (tests kill them)."""
        return self.ray.get([a.pid.remote() for a in self.actors])

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
        if self.started:
            self.ray.shutdown()
