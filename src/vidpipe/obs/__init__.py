"""Observability: metrics, structured logs, traces and the watchdog that alerts on them.

Cluster-wide numbers (jobs by status, queue depth, spend, …) are read from the
database when ``/metrics`` is scraped, so every API replica tells the same truth however
many workers run on however many machines; latencies are histograms observed by the
process doing the work (see :mod:`vidpipe.obs.metrics` for why).
"""
