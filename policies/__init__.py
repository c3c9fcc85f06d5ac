"""Pure, synchronous traffic policies: no I/O, no clock, no logging (see STYLE.md).

balancing/       load balancers (priority, locality, slow start, five pickers)
hosts            the immutable host set a balancer is built from
split            weighted traffic split between clusters
retry            whether an attempt's outcome is retried
backoff          the delay before a retry (exponential, full jitter)
limits           circuit breaker thresholds (concurrency ceilings) and the retry budget
breaker          the closed / open / half-open circuit breaker
outlier          outlier detection and ejection (passive health)
health           active health check config and thresholds
endpoint_health  one verdict per endpoint from all of the above, with Envoy's flags
restart          supervisor restart intensity
settings         field validators for the configs; every problem of one config
errors           the error tree
"""
