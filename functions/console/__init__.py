"""The operator console: one more function (`console`, functions/console/api.py) serving its own pages
and the JSON they read, for admins only. docs/console.md has the design."""
