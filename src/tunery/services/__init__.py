"""Framework-free logic per resource: checks requests, calls storage, inference or the queue,
and returns protocol objects. Nothing here knows HTTP."""
