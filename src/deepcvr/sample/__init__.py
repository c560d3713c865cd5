"""Stratified samples of Ali-CCP with a justified size (`deepcvr sample`, op sample.stratified).

size: the calculator; strata: allocation; keys: selection keys and histograms; lines and raw:
streaming raw files; dbsource: a loaded database as source; report; ops: the op. See
docs/sampling.md.
"""
