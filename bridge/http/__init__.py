"""The HTTP side: the parser-driven channel, the site, the routes, body rules and events."""
