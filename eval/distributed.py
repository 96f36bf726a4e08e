"""Scale-out: which rank this process is, which tensor-parallel group it belongs to, which samples its group
owns, and the one barrier at the end.

Launch with ``torchrun --nproc_per_node N -m specvlm_eval ...`` (or ``accelerate launch --num_processes N -m specvlm_eval ...``
where accelerate starts N processes: on a machine without GPUs it starts one unless told ``--multi_cpu``,
which :func:`current` warns about, and refuses with ``--tp`` > 1); both set ``RANK`` / ``WORLD_SIZE`` /
``LOCAL_RANK``. ``--tp T`` (``model.tp_size``) makes the ``WORLD_SIZE`` processes ``WORLD_SIZE / T`` groups of
``T`` consecutive ranks (group ``g`` is ranks ``g*T .. g*T+T-1``): each group holds one target sharded ``T``
ways (:mod:`specvlm.loading` lays transformers' device mesh out as groups x ``T``), every rank of a group runs
the same samples in the same order, and the group's first rank alone writes their rows. Samples are dealt
round-robin over the groups (sample ``i`` goes to group ``i % groups``; with ``T = 1`` every rank is its own
group), each writing rank appends to its own shard file, and after a barrier rank 0 merges them. Across
nodes, torchrun's usual flags (``--nnodes``, ``--node_rank``, ``--rdzv_endpoint``) number the ranks node by
node, so a ``T`` that divides the processes per node keeps every group on one node (warned otherwise).

The process group is created only when ``WORLD_SIZE > 1``: gloo, which also runs on CPU; with ``T > 1`` on
CUDA, NCCL for the GPUs' tensors beside gloo for the barrier and the runner's one broadcast.

What this module deliberately does not do: model replicas beyond one engine per group, or collectives other
than the barrier (the runner broadcasts rank 0's directory-lock result itself, ``specvlm_eval.runner._lock_all_ranks``,
so every rank stops with the same error; the engine's own collectives stay inside its group).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rank:
    """This process's place in the run: its rank, and its tensor-parallel group of ``tp_size`` ranks."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    tp_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def group(self) -> int:
        """This rank's group: ranks ``group * tp_size`` to ``group * tp_size + tp_size - 1``."""
        return self.rank // self.tp_size

    @property
    def groups(self) -> int:
        """How many groups answer samples side by side (data parallel)."""
        return self.world_size // self.tp_size

    @property
    def writes(self) -> bool:
        """Whether this rank writes its group's rows (the group's first rank; every rank of a group computes them)."""
        return self.rank % self.tp_size == 0

    def owns(self, index: int) -> bool:
        """Whether sample number ``index`` (in the full, ordered sample list) is this rank's group's."""
        return index % self.groups == self.group


def _launcher_started_one() -> bool:
    # accelerate's single-process launcher sets MASTER_ADDR only when more than one process was asked for
    return "WORLD_SIZE" not in os.environ and "ACCELERATE_MIXED_PRECISION" in os.environ and "MASTER_ADDR" in os.environ


def check_tp(tp_size, world_size: int, started_one: bool = False) -> None:
    """Raise ValueError (one line naming both numbers and what to run) when ``tp_size`` cannot split
    ``world_size`` processes into groups."""
    if isinstance(tp_size, bool) or not isinstance(tp_size, int) or tp_size < 1:
        raise ValueError(f"--tp / model.tp_size={tp_size!r} must be an integer >= 1")
    if world_size % tp_size == 0:
        return
    run = f"`torchrun --nproc_per_node {tp_size} -m specvlm_eval CONFIG --tp {tp_size}` (or a multiple of {tp_size} processes)"
    if world_size == 1:
        why = (" (accelerate launch started one process: without GPUs it starts one unless given --multi_cpu)"
               if started_one else "")  # fmt: skip
        raise ValueError(
            f"--tp {tp_size} (model.tp_size) shards the target over {tp_size} processes, and this is one process{why}: "
            f"run {run}"
        )
    divisors = [d for d in range(1, world_size + 1) if world_size % d == 0]
    raise ValueError(
        f"--tp {tp_size} (model.tp_size) does not divide WORLD_SIZE={world_size}: the {world_size} processes cannot "
        f"form groups of {tp_size}; choose --tp among {', '.join(map(str, divisors))}, or run {run}"
    )


def current(tp_size: int = 1) -> Rank:
    """The rank from the launcher's environment (single process when unset), in groups of ``tp_size``
    (:func:`check_tp` refuses a ``tp_size`` that does not divide the processes, before anything loads)."""
    def env(name: str, default: int) -> int:
        raw = os.environ.get(name)
        try:
            return int(raw) if raw not in (None, "") else default
        except ValueError:
            raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None

    world = env("WORLD_SIZE", 1)
    rank = env("RANK", 0)
    started_one = _launcher_started_one()
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world} are inconsistent (need 0 <= RANK < WORLD_SIZE)")
    check_tp(tp_size, world, started_one)
    if started_one:
        logger.warning(
            "accelerate launch was asked for several processes but started one (without GPUs it runs a single "
            "process unless given --multi_cpu): this run uses one process; to run N, use "
            "`torchrun --nproc_per_node N -m specvlm_eval ...`"
        )
    local_world = env("LOCAL_WORLD_SIZE", world)
    if local_world % tp_size and tp_size % local_world and rank == 0:
        logger.warning(
            "--tp %d and the %d processes per node do not divide one another: some tensor-parallel groups straddle "
            "two nodes, and their every step crosses the network; use a --tp that divides --nproc_per_node",
            tp_size, local_world,
        )  # fmt: skip
    return Rank(rank=rank, world_size=world, local_rank=env("LOCAL_RANK", rank), tp_size=tp_size)


def init(rank: Rank, timeout_s: float) -> None:
    """Create the process group when running with more than one process (gloo; with tensor parallelism on
    CUDA, NCCL for the GPUs' tensors beside it)."""
    if not rank.distributed:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "gloo"
        if rank.tp_size > 1 and torch.cuda.is_available():
            torch.cuda.set_device(rank.local_rank % torch.cuda.device_count())
            backend = "cpu:gloo,cuda:nccl"
        dist.init_process_group(backend, rank=rank.rank, world_size=rank.world_size, timeout=timedelta(seconds=timeout_s))
        logger.info("rank %d/%d joined the process group (group %d of %d ranks)", rank.rank, rank.world_size, rank.group,
                    rank.tp_size)  # fmt: skip


def barrier(rank: Rank) -> None:
    """Wait until every rank gets here (no-op for one process)."""
    if rank.distributed:
        import torch.distributed as dist

        dist.barrier()


def shutdown(rank: Rank) -> None:
    if rank.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
