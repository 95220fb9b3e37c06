"""Keep an index live: filesystem events -> touched paths (events) -> batches (trigger) -> the indexer.

The three parts are small and separately testable: `events` turns watchdog events into the paths they
touch, `trigger` debounces them into batches, `watcher` starts and stops the observer and runs the loop.
"""
