"""The generate stage: prompt sources, trace parsing and the run itself (its Parquet shards: distill.io)."""
