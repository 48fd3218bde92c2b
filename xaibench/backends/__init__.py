"""The same methods run by other libraries: zennit (in process), innvestigate (subprocess)."""
