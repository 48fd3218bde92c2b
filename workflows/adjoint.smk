# Relevance vs adjoint sensitivity of a linear ocean model (XAIRT study, PAPERS.md section 5).
