"""Pure domain logic: no I/O, no Flask, Celery or Ansible imports."""
