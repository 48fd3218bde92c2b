# Receptive fields (TRF, ERF) of the radar encoder-decoders (PAPERS.md sections 2 and 4).
