"""The web dashboard: a page of plain ES modules served by the management server, same origin as the API."""
