"""The generate stage: prompt sources, trace parsing, the resumable writer and the run itself."""
