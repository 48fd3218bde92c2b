"""The evaluation study: every reference case's maps scored with the evaluation metrics
(xaibench.metrics: faithfulness, robustness, randomization, complexity, localization, axiomatic),
as skill scores against a random map (Bommer et al. 2024), and each metric checked against
Quantus 0.6.0 on the same work.

    scoring.py              one case x method x backend -> rows of results/evaluation/scores.csv
    quantus_faithfulness.py, quantus_others.py
                            the same metrics run by Quantus (QUANTUS: {metric name: function})
    quantus_check.py        agreement and timing of ours against Quantus
    figures.py              a figure per case (methods x categories) and the summary table
    commands.py             the `xaibench evaluation ...` commands
"""
