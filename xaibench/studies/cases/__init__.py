"""The reference cases: each trained reference network explained with every method on every
backend, and the metrics per method x backend (docs/papers.md sections 1-3).

    case.py         the interface: Case (what a case explains, its region, z^B bounds, extra
                    measures, figure); ClassifierCase for the classifiers
    enso.py, convection.py, radar.py   the cases (radar: radar1, radar2, radar3 and radar_vit
                    from one definition)
    registry.py     CASES {name: Case}, get_case(name), register(case)
    pipeline.py     the generic explain_case and metrics_case (runs through xaibench.studies.sweep)
    commands.py     xaibench explain-case | metrics-case | figure | table

Adding a case: a new module defining CASES = (YourCase(...),) with a Case subclass (case.py),
and its module name in registry.MODULES.
"""
