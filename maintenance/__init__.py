"""The lake-maintenance stage (`ple maintain`): compaction and VACUUM of the lake's Delta tables,
keeping the table versions registered models pin.

    maintain.py   MaintainConfig and `run(config)`: each table compacted, then vacuumed

The Delta operations themselves (OPTIMIZE, VACUUM, the retention that keeps pinned versions,
`Pin`) are ple_runtime/maintenance.py, shared with training and evaluation.
"""
