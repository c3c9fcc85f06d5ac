"""Filters: user code on the data path (issue 15). ``api`` holds what every kind of
filter shares (the header map, a local reply); the chain, Python filters and the
proxy-wasm host build on it."""
