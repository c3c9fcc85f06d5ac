"""HTTP faults on the data path: compiled per config version (``table``), applied per
request (``inject``)."""
