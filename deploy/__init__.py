"""Ways to deploy the cluster: `deploy.local` runs it on this machine."""
