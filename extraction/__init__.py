"""The extract stage: raw event logs -> validated, labelled examples in the lake's Delta tables.

    extract.py      ExtractConfig and `run(config)`: days in order, in passes of consecutive days
    raw_logs.py     the raw log contract: partitions checked, then parsed once per run
    tables.py       the lake's Delta tables as extract reads and writes them
    persistence.py  what a pass keeps in memory (local checkpoints) and releases

The transforms themselves are `feature_eng` (pure DataFrame code; one pass is
`feature_eng.extract_pass`); `jobs/extract.py` is the command line (`ple extract`).
"""
