"""The Ray runtime: the job supervisor and worker actors, their loops, exchange and telemetry.

The only part of ``sparsetrain.workers`` that imports Ray. Actors are plain classes here;
``launch`` makes them remote where it starts them.
"""
