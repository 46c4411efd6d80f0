"""The experiment protocol behind ``focal-al bench``: runs, resume, per-round records, report and figures."""
from focal_al.bench.config import TABLE1, BenchConfig, BenchStrategy, preset_config
from focal_al.bench.report import summarize, write_report
from focal_al.bench.runner import run_bench, run_grid

__all__ = ["TABLE1", "BenchConfig", "BenchStrategy", "preset_config", "run_bench", "run_grid", "summarize",
           "write_report"]
