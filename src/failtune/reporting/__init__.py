"""Reporting: tables on the terminal, and the report.md / report.html of a run or validate folder
(its sections, plots, the cost of the run)."""
