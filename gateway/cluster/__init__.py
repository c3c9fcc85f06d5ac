"""Cluster actors: endpoints, discovery, pools; the snapshot the data path reads."""
