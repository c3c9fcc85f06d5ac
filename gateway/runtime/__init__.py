"""The actor runtime: one-for-one supervision and the request/reply helper of handles."""
