"""The radar networks' theoretical and effective receptive fields against the data's footprint
(docs/papers.md section 4). The geometry itself is library: xaibench.receptive_field.

    experiment.py  measure, table_rows, figure
    commands.py    xaibench receptive-field measure | table | figure
"""
