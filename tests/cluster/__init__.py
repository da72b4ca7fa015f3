"""Tests against the local cluster (scripts/cluster.sh): a package, so that the cluster
fixture ends with the last of them instead of living through the rest of the suite."""
