"""The only package that imports dnslib: query parsing, reply encoding, listeners."""
