"""The benchmark toolkit behind `helpers`, one concern per module, in import order:

paths, profiles, notebook (display, run_sync) -> bodies (wire formats) -> servers
(processes) -> load (asyncio load modes, in one process or several) -> gpu (NVML
sampling) -> stats -> results (on disk) -> locust_runner -> runs (repeated runs and
sweeps) -> published (the original's figures) -> ceilings -> verdicts (what a comparison
may conclude) -> overload (notebook 06's ramp) -> climb (notebook 09's ladder) -> plots.
A module imports only modules before it. Notebooks import `helpers`, which re-exports
what they use.
"""
