"""The Ray-free training core: the step, memory, schedules, elastic rules, samplers, the
single-process simulator, evaluation, checkpoints and exports.

The simulator and the Ray runtime run the same step, so one checks the other.
"""
