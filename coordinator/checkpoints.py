"""Secure-aggregation stages checkpointed in the run state, so a restarted coordinator can carry
on with the same round (``coordinator.secure.StageCheckpoint``)."""

from __future__ import annotations

from coordinator.state import RunStateStore
from protocols.messages import TaskResult
from protocols.secagg import SecAggReply, SecAggResponse
from protocols.serde import decode_node_message, encode_node_message


class StateCheckpoint:
    """Secure stages saved in the run state, each node's reply in its wire encoding."""

    def __init__(self, state: RunStateStore, run_id: str, analysis_id: str, task_id: str) -> None:
        self.state = state
        self.run_id = run_id
        self.analysis_id = analysis_id
        self.task_id = task_id

    def load(self) -> tuple[str, dict[str, dict[str, SecAggReply]]] | None:
        saved = self.state.stages(self.run_id, self.analysis_id)
        if saved is None:
            return None
        stages: dict[str, dict[str, SecAggReply]] = {}
        for stage, replies in saved.stages.items():
            stages[stage] = {}
            for node, blob in replies.items():
                msg = decode_node_message(blob)
                if isinstance(msg, TaskResult) and isinstance(msg.outcome, SecAggResponse):
                    stages[stage][node] = msg.outcome.stage
        return saved.round_id, stages

    def save(self, round_id: str, stage: str, replies: dict[str, SecAggReply]) -> None:
        self.state.save_stage(
            self.run_id,
            self.analysis_id,
            round_id,
            stage,
            {
                node: encode_node_message(TaskResult(self.task_id, SecAggResponse(round_id, reply)))
                for node, reply in replies.items()
            },
        )
