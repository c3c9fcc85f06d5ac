"""triogate's Trio side: supervisor, actors, protocol adapters, upstream pools, CLI."""
