"""A researcher's model package, defined outside xaibench: what `xaibench validate` imports.

The tests run `xaibench validate external_model.my_cnn:build ...` with tests/ as the working
directory, exactly as a researcher runs it next to their own code.
"""
