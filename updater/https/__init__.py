"""HTTPS for both of the project's servers (the update service and the vendor's update server): the
certificate the update service makes or checks, and the gunicorn launcher with TLS 1.2+ only. Owned by no
adapter."""
