"""The data path: downstream connections served against the current data plane snapshot."""
