"""`pytest --nbmake notebooks` runs the quick profile unless BENCHMARK_PROFILE is set."""

import os

os.environ.setdefault("BENCHMARK_PROFILE", "quick")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
