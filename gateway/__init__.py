"""The gateway: the process that serves HTTP, owns the job table, admits, plans and schedules
segments, merges, and writes outputs. It starts and supervises the engine processes.

Layers, each a package, imports running one way (tests/unit/test_layers.py):

    http/        the HTTP edge: app, routes, middleware, errors, OpenAPI, upload parsing
      |
    jobs/        the job layer: job table, admission, worker, runner, engine pool, store, files,
      |          remote fetch and callbacks, metrics
    transcript/  pure transcript shaping: job config, merge, speakers, rewrites, language
      |          identification verdicts, the json-v2 model and its renderers
    shared/      (beside gateway/) the pipe protocol both processes speak

Beside them: `errors` (domain errors, no HTTP), `settings` (one typed Settings, built by `cli`).

May import: engine.main (the engines' entry point, from jobs/) and engine.embedded (from cli);
never the engines' internals.
"""
