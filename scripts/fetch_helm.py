"""Put a real helm 3 binary in .tools/bin (CI runs this before the tests)."""

from provisioner.simulation.helm_download import fetch

if __name__ == "__main__":
    print(fetch())
