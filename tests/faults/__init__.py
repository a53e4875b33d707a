"""The fault suite: a workload runs against a real stack while a nemesis injects faults, and a
history checker verifies the promises from the event log and the clients' own records."""
