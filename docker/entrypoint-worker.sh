#!/bin/sh
# One job per worker process on the gpu queue; concurrency comes from more containers.
set -e
exec promptehr worker --queue gpu --concurrency 1
