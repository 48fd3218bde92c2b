"""The ground-truth attribution benchmark (Mamalakis et al. 2022; docs/papers.md section 6).

    benchmark.py  explain_benchmark, score_benchmark
    figures.py    histograms, example maps, faithfulness against correlation
    commands.py   xaibench groundtruth explain | score | figure
"""
