"""`dsc tune`: search kernel configs on this machine and write its tuned-config file
(dsc/runtime/tuned.py reads it at launch). workloads.py finds what to tune, search.py
times the candidates (dsc/runtime/timing.py), cli/tune.py drives it with a progress bar."""
