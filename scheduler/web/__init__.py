"""The web process (gunicorn): the application factory, the JSON API, its schemas and OpenAPI
document, group commit and the web metrics."""
