"""MapReduce (lab 1) on the actor runtime: a coordinator actor and supervised worker processes.

    from apps.mapreduce import run_job
    result = run_job("wc", files, workers=4, outdir="out")

``zactor mr run|coordinator|worker`` are the command-line faces.
"""

from apps.mapreduce.app import App, AppError, load_app
from apps.mapreduce.job import JobFailed, JobResult, Progress, run_job
from apps.mapreduce.sequential import read_output_lines, run_sequential

__all__ = ["App", "AppError", "JobFailed", "JobResult", "Progress", "load_app", "read_output_lines", "run_job", "run_sequential"]
