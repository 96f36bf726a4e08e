"""Scale-out: which rank this process is, which samples it owns, and the one barrier at the end.

Launch with ``torchrun --nproc_per_node N -m eval ...`` (or ``accelerate launch --num_processes N -m eval ...``
where accelerate starts N processes: on a machine without GPUs it starts one unless told ``--multi_cpu``,
which :func:`current` warns about); both set ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``. Samples are
dealt round-robin (sample ``i`` goes to rank ``i % WORLD_SIZE``) over the deterministic sample list,
each rank writes its own shard file, and after a barrier rank 0 merges them. The process group
(gloo, which also runs on CPU) is created only when ``WORLD_SIZE > 1``.

What this module deliberately does not do: data-parallel model replicas beyond one engine per
process, or collectives other than the barrier (the runner broadcasts rank 0's directory-lock result
itself, ``eval.runner._lock_all_ranks``, so every rank stops with the same error).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rank:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def owns(self, index: int) -> bool:
        """Whether sample number ``index`` (in the full, ordered sample list) is this rank's."""
        return index % self.world_size == self.rank


def current() -> Rank:
    """The rank from the launcher's environment (single process when unset)."""
    def env(name: str, default: int) -> int:
        raw = os.environ.get(name)
        try:
            return int(raw) if raw not in (None, "") else default
        except ValueError:
            raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None

    world = env("WORLD_SIZE", 1)
    rank = env("RANK", 0)
    if "WORLD_SIZE" not in os.environ and "ACCELERATE_MIXED_PRECISION" in os.environ and "MASTER_ADDR" in os.environ:
        # accelerate's single-process launcher sets MASTER_ADDR only when more than one process was asked for
        logger.warning(
            "accelerate launch was asked for several processes but started one (without GPUs it runs a single "
            "process unless given --multi_cpu): this run uses one process; to run N, use "
            "`torchrun --nproc_per_node N -m eval ...`"
        )
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world} are inconsistent (need 0 <= RANK < WORLD_SIZE)")
    return Rank(rank=rank, world_size=world, local_rank=env("LOCAL_RANK", rank))


def init(rank: Rank, timeout_s: float) -> None:
    """Create the gloo process group when running with more than one process."""
    if not rank.distributed:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=rank.rank, world_size=rank.world_size, timeout=timedelta(seconds=timeout_s))
        logger.info("rank %d/%d joined the process group", rank.rank, rank.world_size)


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
