"""The runner: a member of the "runners" group that executes agent runs under the task's lock
(retrieve, prompt, stream the answer as events) with fenced writes (`main.serve`)."""
