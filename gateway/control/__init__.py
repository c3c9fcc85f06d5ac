"""The control side: the control plane actor, the runtime view it publishes, persistence."""
