"""The Celery adapter: the worker's app (:mod:`updater.tasks.app`) and its thin tasks, one module per job.

Task names and the way to queue a task live in :mod:`updater.services.jobs`, which the web app and the CLI
use too; nothing outside this package imports a task module.
"""
