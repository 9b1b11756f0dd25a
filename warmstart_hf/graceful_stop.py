"""Stop on SIGTERM / SIGINT at the next step boundary, after saving a complete checkpoint.

Slurm sends SIGTERM before a time limit, spot instances before preemption, a user presses Ctrl-C.
The handler only records the request; :class:`StopAtStepBoundary` asks the Trainer to save and stop
after the current optimizer step (every rank agrees, so DDP never waits on a rank that left), and the
loop raises :class:`StopRequested` before it would evaluate or start anything else. A second signal
stops at once (KeyboardInterrupt).
"""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from warmstart_hf.distributed import cpu_group


class StopRequested(Exception):
    """The run stopped on a signal at a safe point; rerunning the same command resumes it."""

    def __init__(self, signum: int, where: str):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name} {where}")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # as a shell reports a process ended by that signal


class _StopFlag:
    def __init__(self) -> None:
        self.signum: int | None = None  # set by the handler, at any moment, on this process only
        self.agreed = False  # the last answer of requested(): the same on every rank

    @contextmanager
    def handling_signals(self):
        """Record SIGTERM/SIGINT for the duration of the block (a fresh request each time), then
        restore the previous handlers."""
        self.signum, self.agreed = None, False
        previous = {signum: signal.signal(signum, self._handle) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"\n{signal.Signals(signum).name} received: stopping after the current step and saving a checkpoint "
            "(send it again to stop at once).",
            file=sys.stderr,
            flush=True,
        )

    def requested(self) -> bool:
        """Whether any process got a signal (a collective under DDP: call it on every rank). The flag
        travels over a CPU (gloo) group, so checking it never waits for the GPU's queue.

        Not Accelerate's ``set_trigger`` / ``check_trigger``: set_trigger allocates a tensor on the training
        device (a CUDA call inside a signal handler), check_trigger reduces on that device (NCCL) and reads
        it back with ``.item()``, a host sync every step, and its flag says only "stop", not which signal
        (the exit status is 128 + signum)."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flag = torch.tensor([0 if self.signum is None else self.signum])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=cpu_group())
            if int(flag) and self.signum is None:
                self.signum = int(flag)
        self.agreed = self.signum is not None
        return self.agreed

    def raise_if_requested(self, where: str) -> None:
        if self.requested():
            raise StopRequested(self.signum, where)


STOP = _StopFlag()


class StopAtStepBoundary(TrainerCallback):
    """Save a checkpoint and end training after the step during which a signal arrived. Callbacks read
    ``STOP.agreed`` (decided here, the same on every rank), never the raw ``STOP.signum``."""

    def on_step_end(self, args, state, control, **kwargs):
        if STOP.requested():
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        """After a stop mid-epoch the Trainer still ends the epoch: nothing of the epoch's end may run
        (no evaluation, no second save over the checkpoint just written); the epoch goes on on resume."""
        if STOP.agreed and not stopped_at_epoch_end(state):
            control.should_save = control.should_evaluate = control.should_log = False
        return control


def stopped_at_epoch_end(state) -> bool:
    """Whether training stands at the end of a whole epoch (not part-way through one)."""
    return float(state.epoch or 0).is_integer()
