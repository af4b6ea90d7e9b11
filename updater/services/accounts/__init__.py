"""Who may do what, and the record of what they did: users, passwords, API tokens, the audit log."""
