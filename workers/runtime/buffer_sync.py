"""One round that makes the replicas' module buffers (batch-norm statistics) equal.

Each replica updates its own buffers while it trains. Where they matter (before an
evaluation, a checkpoint, a join and the end of a synchronous run) the loop runs a round:
every live member returns its packed buffers (``TrainingWorker.buffers``, a small numpy
array that Ray keeps in the object store), then every member is handed the references to
all of them and loads their average (``TrainingWorker.sync_buffers``; the mean is computed
in rank order from the same inputs, so every member gets the same bits). A model without
buffers never runs a round, and neither does a group that has not trained since the last.
"""

from __future__ import annotations

from sparsetrain.workers.runtime.gather import WorkerDiedError, gather
from sparsetrain.workers.runtime.group import Member


class BufferSync:
    """Tracks whether the group's buffers may differ, and averages them when asked."""

    def __init__(self, enabled: bool) -> None:
        """``enabled``: the model has buffers (otherwise ``run`` never calls a worker)."""
        self.enabled = enabled
        self.synced = True

    def trained(self) -> None:
        """A step ran: the members' buffers may differ from here on."""
        self.synced = not self.enabled

    def run(self, members: list[Member], step: int) -> list[Member]:
        """Average the buffers of ``members`` (rank order) into every one of them, unless they
        are equal already. Returns the members found dead on the way (the caller drops them;
        the average is over those that answered). A worker's own error is raised as its
        ``TrainingError``."""
        if self.synced or not members:
            return []
        refs = [member.actor.buffers.remote() for member in members]
        answers = gather(refs, step)
        dead = [m for m, a in zip(members, answers, strict=True) if isinstance(a, WorkerDiedError)]
        alive = [i for i, answer in enumerate(answers) if not isinstance(answer, WorkerDiedError)]
        inputs = [refs[i] for i in alive]
        loads = [members[i].actor.sync_buffers.remote(*inputs) for i in alive]
        for i, result in zip(alive, gather(loads, step, ranks=alive), strict=True):
            if isinstance(result, WorkerDiedError):
                dead.append(members[i])
        self.synced = True
        return dead
