"""The serve pipeline: harvest the kernel's flow tables, keep series, write metric families,
serve them over HTTP(S)."""
