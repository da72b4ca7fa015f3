"""The generate stage: synthetic but realistic raw logs for the pipeline (numpy, no Spark).

    generate.py   GenerateConfig and `run(config)` (`ple generate`)
    events.py     the simulated world, one day of behaviour, injected faults, the files written
"""
