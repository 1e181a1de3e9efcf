"""The admin room: a live view of the server for its operators.

`hub` turns the core's events into what the page, the API and the metrics show (plain
Python); `server` serves them over HTTP and WebSocket; `service.start_admin` wires both to the
running server. Importing the package itself loads none of them.
"""
