"""HTTP/1.1 without I/O: parsing (over httptools/llhttp) and serialising, as events and bytes."""
