"""The online update channel: the TUF client, the installation's channel settings, the periodic check,
downloads."""
