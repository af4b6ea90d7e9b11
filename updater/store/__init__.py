"""The update service's database: models, migrations and the queries the services use."""
