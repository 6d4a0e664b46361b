"""The simulation: AWS doubles around moto, the Network Firewall double, the fake
Kubernetes API server with its toy controllers, stand-in charts, the helm fetcher and
the sandbox. For the tests, the benchmark and the sandbox only: the real path never
imports this package (the CLI enters it only for `--sandbox`)."""
