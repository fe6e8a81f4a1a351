"""Drug terminology beyond the built-in table: a local RxNorm index built from a user-supplied
RxNorm release (RRF files), which medication identification consults first."""
