"""Relevance against the exact adjoint of a linear ocean model (docs/papers.md section 5).

    ocean.py       the linear SST-anomaly ocean model and its exact adjoint
    experiment.py  run_experiment: networks trained on the model, explained and compared
    figures.py     maps of adjoint sensitivity beside relevance
    commands.py    xaibench adjoint | adjoint-figure
"""
