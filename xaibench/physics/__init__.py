"""Physical baselines that relevance maps are compared with.

    xaibench.physics.ocean               a linear SST-anomaly ocean model and its exact adjoint
    xaibench.physics.adjoint_experiment  relevance of networks trained on the ocean model vs adjoint sensitivity
    xaibench.physics.receptive_field     theoretical and effective receptive fields (TRF, ERF)

Import the submodule you need; this package imports nothing itself, so that one concern's
dependencies never load with another's.
"""
