"""The daemon's HTTP face: routes, request models and the status page (being moved here, issue 17)."""
