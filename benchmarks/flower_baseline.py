"""Flower 1.41's SecAgg+ workflow, driven in-process: the baseline our own SecAgg+ is timed against.

    python -m benchmarks.flower_baseline --n 100 --length 1000 --num-shares 11 --repeats 3

Needs the ``flower`` extra (``pip install -e '.[flower]'``); ``flwr`` is never imported by the
node or the coordinator.

What runs
---------
Flower's own, unmodified code for both sides of the protocol, through its legacy compatibility
path (the only one SecAgg+ supports in 1.41):

- server: a ``ServerApp`` whose ``main`` builds a ``LegacyContext`` with the legacy ``FedAvg``
  (every client sampled, ``accept_failures=False``, no evaluation) and runs
  ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))`` for one round;
- clients: one ``ClientApp(client_fn, mods=[secaggplus_mod])`` whose ``NumPyClient.fit`` returns
  that client's integer vector (as float64, which is what Flower quantizes) with weight
  ``num_examples = 1``.

How the Grid is driven
----------------------
``InProcessGrid`` implements Flower's abstract ``flwr.serverapp.Grid`` (the interface a
ServerApp talks to: the SuperLink in deployment, the simulation engine's in-memory grid on Ray).
There is no SuperLink, SuperNode, Ray or network: ``push_messages`` delivers each instruction at
once, sequentially, to the destination node's ``ClientApp`` in this thread, with that node's
persistent ``Context`` (the one the SuperNode would keep; ``secaggplus_mod`` stores its protocol
state in ``context.state`` between the four stages), and keeps the reply for ``pull_messages``.
Every message crosses the boundary the way it crosses the wire in Flower's deployment engine: it
is deflated into Flower's content-addressed objects (``get_all_nested_objects`` +
``InflatableObject.deflate``) and inflated again (``inflate_object_from_contents``) on the other
side, both ways, with message ids set as Flower's in-memory grid (instructions: a uuid4) and its
ClientApp runtime (replies: the object id) set them. That copy is required for
correctness (the workflow sends one shared ``RecordDict`` to every node in its setup stage, and
``secaggplus_mod`` pops keys out of what it receives) and it charges Flower the serialization
cost that its real transports pay, and that our in-process transport also pays. An exception in
a ClientApp becomes an error reply, as in Flower's runtime; the round then fails loudly.

``Message(...)`` reads Flower's process-wide ``TaskIdentity`` (run id, node id, task id); the
harness sets it to the ServerApp's identity for the duration of the run, as Flower's own legacy
``run_simulation`` does, and restores it afterwards. Client replies are built with
``Message(content, reply_to=...)`` which takes its identity from the instruction, so the shared
identity is faithful for everything the ClientApps send.

What is timed
-------------
``FlowerRound.seconds`` is the wall time (``time.perf_counter``) of the SecAgg+ fit workflow of
one round: from the ``DefaultWorkflow`` calling the ``SecAggPlusWorkflow`` (the ServerApp starting
the round: ``configure_fit``, setup / share keys / collect masked vectors / unmask, each a
``send_and_receive`` over all sampled nodes) to its return, when ``FedAvg.aggregate_fit`` has
stored the aggregate in the ServerApp's context. All n ClientApps run inside that window, one
after another on this core (as in our ``coordinator.inprocess`` transport), so ``seconds`` is
the total compute of server plus all clients plus serialization: no network, no polling, no
process start-up. Not timed: imports, the one-off warm-up round (``warmup_seconds``), building the
apps, the ServerApp's init stage (initial parameters come from the strategy, so there is no
``get_parameters`` round trip), and the exactness check.

Extra diagnostics: ``client_seconds`` (the node side of every delivery: inflate, ClientApp,
deflate), ``wire_seconds`` (all deflate and inflate, both sides) and ``parallel_estimate_seconds``
(``seconds - client_seconds`` plus, per stage, the slowest node: the round's wall time if every
client had its own core and the network were free; an estimate, not a measurement).

Exactness
---------
Flower's SecAgg+ returns a weighted *mean*. Integer sums come out exactly when every weight is 1
and ``max_weight = 1`` (so the masked weight factor is exactly ``quantization_range``), the values
lie in ``[-clipping_range, clipping_range]``, and ``quantization_range / (2 * clipping_range)`` is
an integer (here a power of two, 2**11, so quantization and dequantization are exact in float64
and the stochastic rounding never fires). Client vectors are integers drawn uniformly from
``[-1024, 1024]`` with ``numpy.random.default_rng(seed)``; ``exact`` says whether
``rint(mean * n_survivors)`` equals the true integer sum in every coordinate, and
``max_abs_error`` is the largest ``|mean * n - sum|`` before rounding (float64 error of the
division by n and FedAvg's re-averaging; about 5e-11 at n = 100).

Parameter semantics (they differ from ours)
-------------------------------------------
Flower's ``num_shares`` counts the node itself: with ``num_shares = k`` each node masks with and
shares its secrets among its ``k - 1`` ring neighbours (``k >> 1`` on each side of a shuffled
ring) and keeps one share. Our ``degree`` counts neighbours only, so degree ``d`` compares with
Flower's ``num_shares = d + 1``. Flower expects an odd ``num_shares`` below n: for an even value
its workflow sends ``num_shares`` to the clients but builds neighbourhoods of ``num_shares + 1``,
and every client's share-keys stage fails with an ``IndexError`` (checked with 1.41.0); so an
even value below n is refused here with a ``ValueError``. ``reconstruction_threshold`` counts
shares including the node's own. Flower gives no formula; its SecAgg+ example uses 2 of 3 shares,
a strict majority, which is also our ``privacy.secagg.graph.default_threshold``. ``main`` defaults
to that: ``num_shares // 2 + 1`` (6 of 11).

Flower-side facts worth knowing when reading the numbers (1.41.0 source): key agreement is ECDH
on P-384 (``cryptography``) with HKDF-SHA256, the key shares travel in Fernet tokens, private keys
are kept as PEM and re-parsed for every exchange, Shamir sharing is pycryptodome's GF(2^128) over
16-byte chunks with a fresh thread pool per secret (and the server combines every share it
received, not just ``threshold`` of them), and masks are expanded with numpy's MT19937 seeded with
32 bits. Profiled at n = 100, 11 shares, the time goes mostly to the clients' share-keys stage
(Shamir splitting, ECDH), the server's unmasking (100 Shamir combinations) and the clients'
masking (ECDH, PEM parsing); the vector length matters little at 100 to 1,000 entries.
"""

from __future__ import annotations

import os

# Flower reads this when ``flwr.supercore.telemetry`` is first imported: set it before any flwr
# import (and force the module flag below in case flwr was imported earlier in this process).
os.environ["FLWR_TELEMETRY_ENABLED"] = "0"

import argparse
import contextlib
import gc
import logging
import statistics
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import flwr.supercore.telemetry as flwr_telemetry
import numpy as np
import numpy.typing as npt
from flwr.app import Context, Error, Message, RecordDict
from flwr.client import Client, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import (
    NDArrays,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.compat.common import recorddict_compat as compat
from flwr.proto.node_pb2 import NodeInfo
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.inflatable.inflatable_object import (
    get_all_nested_objects,
    no_object_id_recompute,
)
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from benchmarks.common import last_line, write_result

flwr_telemetry.FLWR_TELEMETRY_ENABLED = "0"

CLIPPING_RANGE = 1024.0
"""Client values are integers in [-CLIPPING_RANGE, CLIPPING_RANGE] (Flower clips to this)."""
QUANTIZATION_RANGE = 2**22
"""Flower's default; QUANTIZATION_RANGE / (2 * CLIPPING_RANGE) = 2**11 makes integers exact."""
MODULUS_RANGE = 2**32
"""Flower's default (and its maximum): the ring the masked vectors live in."""

_warmed_up = False


@dataclass(frozen=True)
class FlowerRound:
    """One SecAgg+ fit round of Flower 1.41, in process. ``seconds`` is the protocol time."""

    seconds: float
    exact: bool
    n: int
    length: int
    num_shares: int
    reconstruction_threshold: int = 0
    max_abs_error: float = 0.0
    client_seconds: float = 0.0
    wire_seconds: float = 0.0
    parallel_estimate_seconds: float = 0.0
    warmup_seconds: float = 0.0
    """The untimed one-off warm-up round this call ran first (0.0 if the process was warm)."""


@dataclass
class _Stage:
    """The node-side times of one ``send_and_receive`` (one SecAgg+ stage)."""

    node_seconds: list[float] = field(default_factory=list)


@dataclass
class _Recorder:
    wire_seconds: float = 0.0
    stages: list[_Stage] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def start_round(self) -> None:
        """Forget the timings of anything before the round (errors are kept)."""
        self.wire_seconds = 0.0
        self.stages = []


def _to_wire(message: Message) -> tuple[str, dict[str, bytes]]:
    """Deflate a message into Flower's content-addressed objects, as its transports do."""
    with no_object_id_recompute():
        objects = get_all_nested_objects(message)
        contents = {object_id: obj.deflate() for object_id, obj in objects.items()}
        return message.object_id, contents


def _from_wire(root: str, contents: dict[str, bytes], message_id: str) -> Message:
    message = inflate_object_from_contents(root, contents)
    if not isinstance(message, Message):
        raise TypeError(f"expected a Message on the wire, got {type(message).__name__}")
    # The deflated message carries no id; the receiving side sets it (run_clientapp does too).
    message.metadata.__dict__["_message_id"] = message_id
    return message


# Without the flower extra (flwr unresolved, hence Any) mypy flags subclassing and decorating
# flwr's classes; with flwr installed these ignores are unused. Both environments type-check.
class InProcessGrid(Grid):  # type: ignore[misc, unused-ignore]  # Grid is Any without flwr
    """A Flower ``Grid`` whose nodes are ClientApps in this process (see the module docstring).

    Delivery is synchronous and sequential: ``push_messages`` runs each destination's ClientApp
    on a wire copy of the instruction and keeps a wire copy of its reply; ``pull_messages``
    hands replies out once. ``send_and_receive`` is one SecAgg+ stage and is recorded as such.
    """

    def __init__(self, app: ClientApp, contexts: dict[int, Context], recorder: _Recorder) -> None:
        self._app = app
        self._contexts = contexts
        self._recorder = recorder
        self._run: Run | None = None
        self._replies: dict[str, Message] = {}
        self._stage: _Stage | None = None

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        if self._run is None:
            raise RuntimeError("the grid has no run; call set_run first")
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def get_nodes(self) -> Iterable[NodeInfo]:
        return [NodeInfo(node_id=node_id) for node_id in self._contexts]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            meta = message.metadata
            if meta.reply_to_message_id or meta.ttl <= 0 or meta.dst_node_id not in self._contexts:
                raise ValueError(f"invalid instruction for this grid: {meta}")
            message_id = str(uuid4())
            meta.__dict__["_message_id"] = message_id  # as the SuperLink / InMemoryGrid do
            self._deliver(message, message_id)
            ids.append(message_id)
        return ids

    def _deliver(self, instruction: Message, message_id: str) -> None:
        rec = self._recorder
        t0 = time.perf_counter()
        root, contents = _to_wire(instruction)  # server side: serialize
        t1 = time.perf_counter()
        received = _from_wire(root, contents, message_id)  # node side from here
        t2 = time.perf_counter()
        context = self._contexts[instruction.metadata.dst_node_id]
        try:
            reply = self._app(received, context)
        except Exception as ex:
            reason = f"{type(ex)}:<'{ex}'>"
            rec.errors.append(f"node {instruction.metadata.dst_node_id}: {reason}")
            reply = Message(
                Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=received
            )
        t3 = time.perf_counter()
        reply_root, reply_contents = _to_wire(reply)
        t4 = time.perf_counter()
        self._replies[message_id] = _from_wire(reply_root, reply_contents, reply_root)
        t5 = time.perf_counter()
        rec.wire_seconds += (t1 - t0) + (t2 - t1) + (t4 - t3) + (t5 - t4)
        if self._stage is not None:
            self._stage.node_seconds.append(t4 - t1)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        self._stage = _Stage()
        self._recorder.stages.append(self._stage)
        try:
            ids = list(self.push_messages(messages))
        finally:
            self._stage = None
        # Everything was delivered synchronously, so the timeout can never expire.
        return list(self.pull_messages(ids))


class _IntegerClient(NumPyClient):  # type: ignore[misc, unused-ignore]  # Any without flwr
    """A client whose 'update' is its fixed integer vector, with weight 1."""

    def __init__(self, vector: npt.NDArray[np.float64]) -> None:
        self._vector = vector

    def fit(
        self, parameters: NDArrays, config: dict[str, Scalar]
    ) -> tuple[NDArrays, int, dict[str, Scalar]]:
        return [self._vector], 1, {}


class _TimedWorkflow:
    """Wraps the fit workflow: the round's clock starts and stops here."""

    def __init__(self, inner: SecAggPlusWorkflow, recorder: _Recorder) -> None:
        self._inner = inner
        self._recorder = recorder
        self.seconds: float | None = None

    def __call__(self, grid: Grid, context: Context) -> None:
        self._recorder.start_round()
        start = time.perf_counter()
        self._inner(grid, context)
        self.seconds = time.perf_counter() - start


@contextlib.contextmanager
def _server_identity(run_id: int) -> Iterator[None]:
    """Flower's process-wide task identity, set to the ServerApp's and restored afterwards."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    try:
        yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


@contextlib.contextmanager
def _quiet_flower() -> Iterator[None]:
    logger = logging.getLogger("flwr")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def client_vectors(n: int, length: int, seed: int) -> npt.NDArray[np.int64]:
    """The clients' integer vectors: uniform on [-CLIPPING_RANGE, CLIPPING_RANGE], seeded."""
    bound = int(CLIPPING_RANGE)
    rng = np.random.default_rng(seed)
    return rng.integers(-bound, bound, size=(n, length), endpoint=True, dtype=np.int64)


def _check_params(n: int, length: int, num_shares: int, threshold: int) -> None:
    if n < 2:
        raise ValueError("SecAgg+ in Flower needs at least 2 clients")
    if length < 1:
        raise ValueError("length must be at least 1")
    if not 3 <= num_shares <= n:
        raise ValueError(f"num_shares must be in [3, n={n}], got {num_shares}")
    if num_shares < n and num_shares % 2 == 0:
        raise ValueError(
            f"num_shares={num_shares} is even and below n={n}: Flower 1.41 then builds "
            f"neighbourhoods of {num_shares + 1} but tells clients {num_shares}, and every "
            "client fails in the share-keys stage. Use an odd num_shares (it counts the node "
            "itself: our degree d compares with num_shares = d + 1)."
        )
    if not 2 <= threshold < num_shares:
        raise ValueError(f"reconstruction_threshold must be in [2, {num_shares - 1}]")
    if n * QUANTIZATION_RANGE >= MODULUS_RANGE:
        raise ValueError(
            f"n={n} clients would overflow Flower's 2**32 ring at quantization range 2**22"
        )


def _run_round(
    n: int, length: int, num_shares: int, threshold: int, seed: int
) -> tuple[FlowerRound, _Recorder]:
    _check_params(n, length, num_shares, threshold)
    vectors = client_vectors(n, length, seed)
    truth = vectors.sum(axis=0)
    floats = vectors.astype(np.float64)

    rng = np.random.default_rng([seed, 1])  # node ids: 63-bit, distinct, like Flower's
    node_ids: list[int] = []
    while len(node_ids) < n:
        candidate = int(rng.integers(2, 2**63 - 1))
        if candidate not in node_ids:
            node_ids.append(candidate)
    run_id = int(rng.integers(1, 2**63 - 1))
    partition = {node_id: i for i, node_id in enumerate(node_ids)}

    def client_fn(context: Context) -> Client:
        return _IntegerClient(floats[partition[context.node_id]]).to_client()

    client_app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
    contexts = {
        node_id: Context(
            run_id=run_id,
            node_id=node_id,
            node_config={"partition-id": i, "num-partitions": n},
            state=RecordDict(),
            run_config={},
        )
        for i, node_id in enumerate(node_ids)
    }
    recorder = _Recorder()
    grid = InProcessGrid(client_app, contexts, recorder)
    grid.set_run(Run.create_empty(run_id=run_id))

    timed = _TimedWorkflow(
        SecAggPlusWorkflow(
            num_shares=num_shares,
            reconstruction_threshold=threshold,
            max_weight=1.0,
            clipping_range=CLIPPING_RANGE,
            quantization_range=QUANTIZATION_RANGE,
            modulus_range=MODULUS_RANGE,
        ),
        recorder,
    )
    outcome: dict[str, Any] = {}
    server_app = ServerApp()

    @server_app.main()  # type: ignore[untyped-decorator, unused-ignore]  # Any without flwr
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=n,
            min_evaluate_clients=n,
            min_available_clients=n,
            accept_failures=False,
            fit_metrics_aggregation_fn=lambda _: {},  # the clients report no metrics
            # The round aggregates the clients' own vectors; no model is broadcast.
            initial_parameters=ndarrays_to_parameters([]),
        )
        legacy = LegacyContext(
            context=context, config=ServerConfig(num_rounds=1), strategy=strategy
        )
        DefaultWorkflow(fit_workflow=timed)(grid, legacy)
        record = legacy.state.array_records[MAIN_PARAMS_RECORD]
        outcome["aggregate"] = parameters_to_ndarrays(
            compat.arrayrecord_to_parameters(record, keep_input=True)
        )

    server_context = Context(
        run_id=run_id, node_id=SUPERLINK_NODE_ID, node_config={}, state=RecordDict(),
        run_config={},
    )  # fmt: skip
    gc.collect()
    with _server_identity(run_id), _quiet_flower():
        server_app(grid, server_context)

    if recorder.errors:
        raise RuntimeError(
            f"{len(recorder.errors)} ClientApp error(s) in Flower's SecAgg+ round; first: "
            + recorder.errors[0]
        )
    aggregate = outcome.get("aggregate") or []
    if timed.seconds is None or len(aggregate) != 1 or aggregate[0].shape != (length,):
        raise RuntimeError(
            "Flower's SecAgg+ round produced no aggregate (the workflow halted; "
            f"got {[a.shape for a in aggregate]}); see the flwr log above"
        )
    mean = np.asarray(aggregate[0], dtype=np.float64)
    scaled = mean * n  # every client weighs 1 and none dropped: the mean times n is the sum
    exact = bool(np.array_equal(np.rint(scaled).astype(np.int64), truth))
    max_abs_error = float(np.max(np.abs(scaled - truth)))

    client_seconds = sum(sum(s.node_seconds) for s in recorder.stages)
    critical = sum(max(s.node_seconds, default=0.0) for s in recorder.stages)
    result = FlowerRound(
        seconds=timed.seconds,
        exact=exact,
        n=n,
        length=length,
        num_shares=num_shares,
        reconstruction_threshold=threshold,
        max_abs_error=max_abs_error,
        client_seconds=client_seconds,
        wire_seconds=recorder.wire_seconds,
        parallel_estimate_seconds=timed.seconds - client_seconds + critical,
    )
    return result, recorder


def _warm_up() -> float:
    """One tiny untimed round per process: Flower's lazy imports and first-use costs."""
    global _warmed_up
    if _warmed_up:
        return 0.0
    start = time.perf_counter()
    _run_round(n=3, length=4, num_shares=3, threshold=2, seed=0)
    _warmed_up = True
    return time.perf_counter() - start


def flower_secagg_round(
    n: int, length: int, num_shares: int, reconstruction_threshold: int, seed: int = 0
) -> FlowerRound:
    """Run one Flower SecAgg+ round over n in-process clients and time it (module docstring).

    Raises ``ValueError`` for parameters Flower cannot run correctly and ``RuntimeError`` if
    the round fails (a ClientApp raised, or the workflow halted without an aggregate).
    """
    _check_params(n, length, num_shares, reconstruction_threshold)
    warmup = _warm_up()
    result, _ = _run_round(n, length, num_shares, reconstruction_threshold, seed)
    if warmup:
        result = FlowerRound(**{**result.__dict__, "warmup_seconds": warmup})
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.flower_baseline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--n", type=int, default=100, help="clients (default 100)")
    parser.add_argument("--length", type=int, default=1000, help="vector length (default 1000)")
    parser.add_argument(
        "--num-shares", type=int, default=11, help="Flower's num_shares, odd (default 11)"
    )
    parser.add_argument(
        "--threshold",
        type=int,
        default=None,
        help="reconstruction threshold (default: a strict majority, num_shares // 2 + 1)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="measured rounds (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of round r is seed + r")
    parser.add_argument(
        "--save", action="store_true", help="also write benchmarks/results/flower_baseline.json"
    )
    args = parser.parse_args(argv)
    threshold = args.threshold if args.threshold is not None else args.num_shares // 2 + 1
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    rounds = []
    for r in range(args.repeats):
        one = flower_secagg_round(args.n, args.length, args.num_shares, threshold, args.seed + r)
        rounds.append(one)
        print(
            f"round {r}: {one.seconds:.3f} s (clients {one.client_seconds:.3f} s, wire "
            f"{one.wire_seconds:.3f} s, parallel estimate {one.parallel_estimate_seconds:.3f} s)"
            f", exact={one.exact}, max |error| {one.max_abs_error:.2e}",
            flush=True,
        )
    result: dict[str, Any] = {
        "median_seconds": statistics.median(r.seconds for r in rounds),
        "seconds": [round(r.seconds, 4) for r in rounds],
        "exact": all(r.exact for r in rounds),
        "max_abs_error": max(r.max_abs_error for r in rounds),
        "median_client_seconds": statistics.median(r.client_seconds for r in rounds),
        "median_wire_seconds": statistics.median(r.wire_seconds for r in rounds),
        "median_parallel_estimate_seconds": statistics.median(
            r.parallel_estimate_seconds for r in rounds
        ),
        "warmup_seconds": rounds[0].warmup_seconds,
        "n": args.n,
        "length": args.length,
        "num_shares": args.num_shares,
        "reconstruction_threshold": threshold,
        "repeats": args.repeats,
    }
    if args.save:
        config = {k: result[k] for k in ("n", "length", "num_shares", "reconstruction_threshold")}
        write_result("flower_baseline", {**config, "repeats": args.repeats}, result)
    print(last_line(result))
    return 0 if result["exact"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
