"""The live view pipeline: ring buffer records, one decoder, filters, `trace` and `top`."""
