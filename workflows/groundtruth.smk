# The ground-truth attribution benchmark (Mamalakis et al. 2022).
