"""The one native boundary: libbpf through ctypes, capabilities, the C struct mirrors and the
loaded program. Nothing outside this package imports ctypes or looks a map up by name."""
