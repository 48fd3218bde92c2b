"""The same methods run by other libraries: zennit, captum and LXT (in process), innvestigate (subprocess)."""
