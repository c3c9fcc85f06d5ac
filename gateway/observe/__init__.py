"""What the gateway tells about itself: stats, access logs, trace context."""
