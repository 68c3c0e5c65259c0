"""The deployable project: `Definitions`, jobs, sensors and schedules, the `lrouter` CLI, lineage and the demo.

May import: everything.
"""
