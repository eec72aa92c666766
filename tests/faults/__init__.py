"""Fault tests (issue 6): the server killed mid-burst, the PostgreSQL connection lost mid-request, a
read-only or full SQLite database. Real gunicorn, real databases, every wait bounded."""
