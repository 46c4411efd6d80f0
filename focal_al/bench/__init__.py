"""The experiment protocol behind ``focal-al bench``: runs, resume, per-round records, report and figures."""
