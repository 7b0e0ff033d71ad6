"""The agent's HTTP side: health, metrics, status API, live dashboard."""
