"""The application: service tree, lifecycle, command line, healthcheck, demo upstream."""
