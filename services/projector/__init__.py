"""The projector: folds every partition log into the SQL read models and the event archive,
and trims the Redis streams below what is archived (`main.serve`)."""
