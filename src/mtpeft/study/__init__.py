"""The study: a grid of ordinary runs (each task alone, all together, every pair; per method,
backbone and loss weighting) with one budget, then its report (tables, affinity, costs, findings).

config.py  the study YAML        grid.py    cells, running them resumably   estimate.py  --dry-run times
affinity.py  task affinity       costs.py   the cost ledger                 findings.py  the paper's claims checked
report.py  report.md + CSVs      plots.py   PNGs
"""
