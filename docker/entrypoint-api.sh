#!/bin/sh
# Migrations first: the API refuses to start on a database behind the latest migration.
set -e
promptehr db upgrade
exec promptehr serve --host 0.0.0.0 --port "${PORT:-8000}"
