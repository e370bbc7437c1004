"""The job layer: the job table and each job's life (worker), admission, the runner and the
pure task builder, the engine pool and its watchdog, the durable store and the job files (the
seams cluster mode needs: `JobStore`, `BlobStore`, `Admission`), progress, remote fetch and
callbacks, and the metrics.

May import: gateway.transcript, gateway.errors, gateway.settings, shared, and engine.main (the
entry point the pool spawns). Never gateway.http.
"""
